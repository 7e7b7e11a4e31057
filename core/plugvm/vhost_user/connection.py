"""The frontend's end of a vhost-user socket: connecting, sending a message with its fds
(SCM_RIGHTS), and reading one reply within a timeout, checked against the request.

Only the Frontend uses a Connection, and it holds `lock` around each exchange: the
device's I/O thread and the API thread both talk to one backend. Socket failures are
turned into the BackendError family here, so nothing above sees a bare OSError.
"""

from __future__ import annotations

import array
import errno
import socket
import threading
import time

from plugvm.vhost_user import protocol
from plugvm.vhost_user.errors import BackendGone, BackendTimeout, ConnectError, ReplyError

_RETRIED = (errno.ENOENT, errno.ECONNREFUSED)     # the backend has not made or opened its socket yet
_GONE = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN, errno.EBADF)


def connect_socket(path: str, timeout: float, interval: float = 0.1) -> socket.socket:
    """A stream socket connected to `path`, retrying every `interval` seconds while the
    path is missing or refuses (a backend started just before us), for up to `timeout`
    seconds. ConnectError names the path and the last reason."""
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(path)
            return sock
        except OSError as e:
            sock.close()
            left = deadline - time.monotonic()
            if e.errno not in _RETRIED:
                raise ConnectError(f"vhost-user: cannot connect to {path}: {e.strerror or e}") from e
            if left <= 0:
                raise ConnectError(f"vhost-user: cannot connect to {path} within {timeout:g} s: "
                                   f"{e.strerror}") from e
            time.sleep(min(interval, left))


class Connection:
    """A connected socket and the framing of messages over it."""

    def __init__(self, sock: socket.socket, name: str, reply_timeout: float):
        self.sock = sock
        self.name = name                    # the socket path, for messages
        self.reply_timeout = reply_timeout
        self.lock = threading.RLock()       # re-entrant: a sequence holds it across its messages

    def fileno(self) -> int:
        return self.sock.fileno()

    def close(self) -> None:
        self.sock.close()

    def _abandon(self, error: BaseException) -> BaseException:
        """After a timeout or a bad reply the stream is out of step (a late reply would
        answer the next request), so the spec's rule applies: the frontend closes the
        connection. Shut down, not closed: fileno() stays valid and shows EOF to a
        watcher, the backend sees EOF, and later requests raise BackendGone."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        return error

    def _gone(self, what: str, request: str, e: BaseException | None = None) -> BackendGone:
        reason = f": {e.strerror}" if isinstance(e, OSError) and e.strerror else ""
        return BackendGone(f"vhost-user backend at {self.name} is gone ({what}{reason}) during {request}", request)

    def send(self, request: protocol.Request, flags: int, payload: bytes = b"", fds: list[int] = ()) -> None:
        """One message, header and payload in one sendmsg with `fds` beside it. MSG_NOSIGNAL:
        a dead backend gives EPIPE (BackendGone), never SIGPIPE."""
        data = protocol.pack_header(request, protocol.VERSION | flags, len(payload)) + payload
        ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds).tobytes())] if fds else []
        self.sock.settimeout(self.reply_timeout)
        try:
            sent = self.sock.sendmsg([data], ancillary, socket.MSG_NOSIGNAL)
            if sent < len(data):            # a full socket buffer: the rest goes without the fds
                self.sock.sendall(data[sent:], socket.MSG_NOSIGNAL)
        except TimeoutError as e:
            raise self._abandon(BackendTimeout(f"vhost-user backend at {self.name} takes no {request.name} "
                                               f"within {self.reply_timeout:g} s", request.name)) from e
        except OSError as e:
            if e.errno in _GONE:
                raise self._gone("send failed", request.name, e) from e
            raise

    def _read_exactly(self, size: int, deadline: float, request: str) -> bytes:
        chunks, got = [], 0
        while got < size:
            left = deadline - time.monotonic()
            if left <= 0:
                raise self._abandon(BackendTimeout(f"vhost-user backend at {self.name} sent no reply to "
                                                   f"{request} within {self.reply_timeout:g} s", request))
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(size - got)
            except TimeoutError:
                continue                    # the loop's deadline check raises
            except OSError as e:
                if e.errno in _GONE:
                    raise self._gone("receive failed", request, e) from e
                raise
            if not chunk:
                what = "end of file" if got == 0 else f"end of file after {got} of {size} bytes"
                raise self._gone(what, request)
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def receive_reply(self, request: protocol.Request, size: int | None) -> bytes:
        """The payload of the backend's reply to `request`: checked for the request's code,
        the REPLY flag, version 1, and `size` bytes (any size up to MAX_PAYLOAD if None)."""
        deadline = time.monotonic() + self.reply_timeout
        name = request.name
        header = protocol.unpack_header(self._read_exactly(protocol.HEADER_SIZE, deadline, name))
        if header.size > protocol.MAX_PAYLOAD:
            raise self._abandon(ReplyError(f"vhost-user backend at {self.name} answered {name} with a "
                                           f"{header.size}-byte payload, above {protocol.MAX_PAYLOAD}", name))
        payload = self._read_exactly(header.size, deadline, name) if header.size else b""
        # The whole message is read before judging it, so the stream stays in step.
        problem = None
        if header.request != request:
            problem = f"request code {header.request}"
        elif not header.flags & protocol.FLAG_REPLY:
            problem = f"flags {header.flags:#x} without the REPLY flag"
        elif header.version != protocol.VERSION:
            problem = f"version {header.version}"
        elif size is not None and header.size != size:
            problem = f"a {header.size}-byte payload, not {size}"
        if problem:
            raise self._abandon(ReplyError(f"vhost-user backend at {self.name} answered {name} with {problem}",
                                           name))
        return payload
