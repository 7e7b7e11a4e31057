"""The host side of the hybrid vsock: streams accepted on the listening socket, and
their first line, `CONNECT <port>\\n` (notes §3g), before they become connections.

The line is read without taking a byte past its newline (peek, then read exactly the
line), since what follows is the stream's payload for the guest. A line that is not
`CONNECT <u32>` (the word in any case) closes that stream and nothing else.
"""

from __future__ import annotations

import re
import socket

from plugvm.logs import get_logger
from plugvm_vsock.engine import MAX_CONNECTIONS, Engine
from plugvm_vsock.listener import Listener
from plugvm_vsock.poller import IN, Poller

log = get_logger(__name__)
MAX_LINE = 64                   # "CONNECT 4294967295\n" is 19 bytes
ACCEPTS_PER_EVENT = 64          # then other fds get their turn; the listener stays readable
_CONNECT = re.compile(rb"connect ([0-9]{1,10})\n", re.IGNORECASE)


class Muxer:
    """Called on the device's I/O thread, from Poller.dispatch()."""

    def __init__(self, listener: Listener, poller: Poller, engine: Engine):
        self.listener, self.poller, self.engine = listener, poller, engine
        # fd → (stream, the part of its CONNECT line read so far)
        self.pending: dict[int, tuple[socket.socket, bytearray]] = {}
        self.paused = False
        engine.on_close = self.resume
        poller.set(listener.fileno(), IN, self._accept)

    def _accept(self, events: int) -> None:
        for _ in range(ACCEPTS_PER_EVENT):
            try:
                sock = self.listener.accept()
            except OSError as e:
                # The stream stays in the backlog and the listener readable: stop listening
                # (or the thread would spin) until a stream closes and frees an fd.
                log.warning("vsock: cannot accept; listening again when a stream closes",
                            socket=str(self.listener.path), error=e.strerror)
                self.paused = True
                self.poller.remove(self.listener.fileno())
                return
            if sock is None:
                return
            if len(self.pending) + len(self.engine.conns) >= MAX_CONNECTIONS:
                log.warning("vsock: too many connections; host stream closed", limit=MAX_CONNECTIONS)
                sock.close()
                continue
            self.pending[sock.fileno()] = (sock, bytearray())
            self.poller.set(sock.fileno(), IN, lambda events, s=sock: self._line(s))

    def _line(self, sock: socket.socket) -> None:
        entry = self.pending.get(sock.fileno())
        if entry is None or entry[0] is not sock:
            return                          # a stale event for a closed stream's fd
        line = entry[1]
        try:
            # Peek, then take exactly up to the newline: the payload after it stays in the
            # socket. Bytes with no newline yet are all line, so they are taken (epoll is
            # level-triggered: leaving them would wake the thread until the rest came).
            head = sock.recv(MAX_LINE - len(line), socket.MSG_PEEK | socket.MSG_DONTWAIT)
            if not head:
                self._refuse(sock, line, "closed before its CONNECT line")
                return
            end = head.find(b"\n")
            line += sock.recv(end + 1 if end >= 0 else len(head), socket.MSG_DONTWAIT)
        except BlockingIOError:
            return
        except OSError as e:
            self._refuse(sock, line, e.strerror or str(e))
            return
        if end < 0:
            if len(line) >= MAX_LINE:
                self._refuse(sock, line, f"no newline in the first {MAX_LINE} bytes")
            return
        match = _CONNECT.fullmatch(line)
        if match is None or int(match[1]) > 0xFFFF_FFFF:
            self._refuse(sock, line, "not CONNECT <port>")
            return
        del self.pending[sock.fileno()]
        self.poller.remove(sock.fileno())
        self.engine.host_connects(sock, int(match[1]))

    def _refuse(self, sock: socket.socket, line: bytes, why: str) -> None:
        log.info("vsock: host stream closed", reason=why, line=bytes(line).decode("ascii", "replace"))
        del self.pending[sock.fileno()]
        self.poller.remove(sock.fileno())
        sock.close()
        self.resume()

    def resume(self) -> None:
        """A stream closed: listen again if an accept failed for want of fds."""
        if self.paused:
            self.paused = False
            self.poller.set(self.listener.fileno(), IN, self._accept)

    def close(self) -> None:
        """Close the streams still on their first line; the listener stays (the device's)."""
        self.poller.remove(self.listener.fileno())
        for fd, (sock, _) in self.pending.items():
            self.poller.remove(fd)
            sock.close()
        self.pending.clear()
