"""One vsock stream between a guest port and a host unix stream, and its credit
accounting both ways (virtio 1.2 §5.10.6.3).

Guest → host: the guest may have at most our buf_alloc bytes in flight, counted from
the fwd_cnt we last told it. fwd_cnt only advances when the host socket takes the
bytes, so a slow host reader makes the guest wait instead of making the VMM buffer:
what the host has not taken yet sits in `outbuf`, never more than BUF_ALLOC.

Host → guest: we send the guest at most its credit, buf_alloc - (tx_cnt - fwd_cnt)
from its last header; the bytes go from the host socket straight into the guest's RX
buffers, so nothing is buffered on this side at all.
"""

from __future__ import annotations

import enum
import socket

from plugvm_vsock.packet import U32, span
from plugvm_vsock.poller import IN, OUT

BUF_ALLOC = 256 * 1024      # our receive buffer per connection, as Linux's default buffer_size


class State(enum.Enum):
    CONNECTING = "connecting"       # host-initiated: our REQUEST is out, the guest has not answered
    ESTABLISHED = "established"


class Connection:
    """Called by the engine on the device's I/O thread only."""

    def __init__(self, host_port: int, guest_port: int, sock: socket.socket, state: State):
        self.host_port, self.guest_port = host_port, guest_port
        self.sock = sock
        self.state = state
        self.outbuf = bytearray()       # guest data the host socket has not taken yet
        self.uncounted = 0              # bytes at outbuf's head that are ours (the OK line), not the guest's
        self.fwd_cnt = 0                # guest bytes the host took (u32, wraps)
        self.told_fwd_cnt = 0           # the fwd_cnt in our last packet to the guest
        self.tx_cnt = 0                 # bytes we sent the guest (u32, wraps)
        self.peer_buf_alloc = 0
        self.peer_fwd_cnt = 0
        self.host_eof = False           # the host will send no more
        self.host_shut_sent = False     # we shut the host socket's write side (the guest sent SHUTDOWN SEND)
        self.guest_shut_send = False    # the guest will send no more
        self.guest_shut_rcv = False     # the guest takes no more
        self.queued = False             # in the engine's ready list (host data to read)
        self.credit_update_queued = False
        self.mask = 0                   # the epoll events we listen to on sock

    @property
    def key(self) -> tuple[int, int]:
        return self.host_port, self.guest_port

    def fileno(self) -> int:
        return self.sock.fileno()

    def peer_credit(self) -> int:
        """How many more bytes the guest can take now."""
        in_flight = (self.tx_cnt - self.peer_fwd_cnt) & U32
        return max(0, self.peer_buf_alloc - in_flight)

    def buffered(self) -> int:
        """Guest bytes received and not yet taken by the host: what our credit counts."""
        return len(self.outbuf) - self.uncounted

    def update_peer(self, buf_alloc: int, fwd_cnt: int) -> None:
        self.peer_buf_alloc, self.peer_fwd_cnt = buf_alloc, fwd_cnt

    def sent_to_guest(self, count: int) -> None:
        self.tx_cnt = (self.tx_cnt + count) & U32

    def forwarded(self, count: int) -> None:
        """`count` bytes left outbuf's head for the host socket."""
        ours = min(count, self.uncounted)
        self.uncounted -= ours
        self.fwd_cnt = (self.fwd_cnt + count - ours) & U32
        del self.outbuf[:count]

    def credit_low(self) -> bool:
        """Whether the guest should hear of our fwd_cnt now: it has advanced, and the room
        the guest last heard of is under half our buffer (so it may be about to wait)."""
        if self.fwd_cnt == self.told_fwd_cnt:
            return False
        told_room = BUF_ALLOC - ((self.fwd_cnt - self.told_fwd_cnt) & U32) - self.buffered()
        return told_room < BUF_ALLOC // 2

    def events(self) -> int:
        """The epoll events wanted now: readable while the guest can take data (and the
        stream is not already queued for an RX buffer), writable while outbuf holds some."""
        mask = 0
        if (self.state is State.ESTABLISHED and not self.host_eof and not self.guest_shut_rcv
                and not self.queued and self.peer_credit() > 0):
            mask |= IN
        if self.outbuf:
            mask |= OUT
        return mask

    # --- the host socket (non-blocking; OSError other than EAGAIN means the stream broke) ----

    def take(self, payload: list[memoryview], length: int) -> None:
        """Guest data for the host: written at once when nothing waits before it, the rest
        kept in outbuf (the caller checked it is within our credit)."""
        sent = 0
        if not self.outbuf:
            try:
                sent = self.sock.sendmsg(payload, [], socket.MSG_NOSIGNAL | socket.MSG_DONTWAIT)
            except BlockingIOError:
                pass
            self.fwd_cnt = (self.fwd_cnt + sent) & U32
        for piece in span(payload, sent, length - sent):
            self.outbuf += piece

    def say(self, line: bytes) -> None:
        """Bytes of ours for the host, ahead of the guest's and outside its credit."""
        self.outbuf += line
        self.uncounted += len(line)

    def flush(self) -> None:
        """Write what outbuf holds, as far as the host socket takes it."""
        if self.outbuf:
            try:
                sent = self.sock.send(self.outbuf, socket.MSG_NOSIGNAL | socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            self.forwarded(sent)

    def read_into(self, views: list[memoryview]) -> int | None:
        """Host bytes into `views` (the caller bounded them by the guest's credit): how
        many, 0 at the host's end, None when it has none now."""
        try:
            return self.sock.recvmsg_into(views, 0, socket.MSG_DONTWAIT)[0]
        except BlockingIOError:
            return None

    def shut_host_write(self) -> None:
        """The guest sends no more and all it sent is out: the host reader sees its end."""
        self.host_shut_sent = True
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass            # gone already: the next read or write finds out

    def close(self) -> None:
        self.sock.close()
