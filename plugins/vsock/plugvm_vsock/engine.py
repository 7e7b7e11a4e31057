"""The packet engine: the connection table, what each guest packet does to it, and the
packets the device owes the guest. The device (device.py) feeds it TX chains and RX
chains; the muxer (muxer.py) hands it host streams. All of it runs on the device's
I/O thread, and a test drives it in-process with plain chains.

The guest is hostile: a packet that breaks a rule resets the one connection it names
(or, with no usable header, is dropped); nothing here raises out of from_guest().
What the guest is owed waits in a backlog bounded by the device: it stops taking TX
chains while the backlog is full (the guest gave no RX buffers), so a guest that only
sends cannot make the VMM queue replies without bound.
"""

from __future__ import annotations

import socket
from collections import deque
from collections.abc import Callable

from plugvm.logs import get_logger
from plugvm_vsock.connection import BUF_ALLOC, Connection, State
from plugvm_vsock.packet import (HEADER_SIZE, HOST_CID, MAX_PAYLOAD, OP_CREDIT_REQUEST, OP_CREDIT_UPDATE,
                                 OP_REQUEST, OP_RESPONSE, OP_RST, OP_RW, OP_SHUTDOWN, OPS, SHUTDOWN_RCV,
                                 SHUTDOWN_SEND, TYPE_STREAM, Header, MalformedPacketError, ShortPacketError,
                                 read_packet, span, write_header)
from plugvm_vsock.poller import IN, OUT, Poller

log = get_logger(__name__)
# What a guest's packets cause is logged at debug only (and counted): a guest must not
# be able to flood the VMM's log.

MAX_CONNECTIONS = 1023          # cloud-hypervisor's bound (notes §3g)
MAX_BACKLOG = 2 * MAX_CONNECTIONS + 64
FIRST_LOCAL_PORT = 1 << 30      # host ports of host-initiated connections, as ch allocates them
PORT_LIMIT = 1 << 32


class Engine:
    def __init__(self, guest_cid: int, socket_path: str, poller: Poller,
                 connect: Callable[[str], socket.socket] | None = None):
        """`connect(path)` opens a guest-initiated connection's host stream (a
        non-blocking unix connect by default; tests may replace it)."""
        self.cid = guest_cid
        self.socket_path = socket_path
        self.poller = poller
        self.connect = connect or _connect_unix
        self.conns: dict[tuple[int, int], Connection] = {}
        self.backlog: deque[tuple[tuple[int, int], int, int]] = deque()   # (key, op, flags) owed the guest
        self.ready: deque[Connection] = deque()      # host data to read, credit permitting
        self._next_port = FIRST_LOCAL_PORT
        self.on_close: Callable[[], None] = lambda: None     # a host stream closed (the muxer listens)
        self.counters = {"rst_sent": 0, "dropped": 0}

    # --- what the device asks ----------------------------------------------------------------

    def backlog_full(self) -> bool:
        return len(self.backlog) >= MAX_BACKLOG

    def has_rx_work(self) -> bool:
        return bool(self.backlog or self.ready)

    def from_guest(self, readable: list[memoryview]) -> None:
        """One packet from the TX queue."""
        try:
            header, payload = read_packet(readable)
        except ShortPacketError as e:
            self._drop("short packet", e)
            return
        except MalformedPacketError as e:
            if e.header.src_cid == self.cid:
                self._reset_named(e.header, str(e))
            else:
                self._drop("malformed packet", e)
            return
        if header.src_cid != self.cid:
            # Not the guest's address: answering would speak for someone else (ch drops these too).
            self._drop("packet from a CID not the guest's", None, src_cid=header.src_cid)
            return
        if header.dst_cid != HOST_CID or header.type != TYPE_STREAM or header.op not in OPS:
            self._reset_named(header, f"dst_cid {header.dst_cid}, type {header.type}, op {header.op}")
            return
        key = (header.dst_port, header.src_port)
        conn = self.conns.get(key)
        if conn is None:
            if header.op == OP_REQUEST:
                self._guest_connects(header, key)
            elif header.op != OP_RST:           # never answer a reset with a reset
                self._owe(key, OP_RST)
            return
        conn.update_peer(header.buf_alloc, header.fwd_cnt)
        op = header.op
        if op == OP_RW:
            self._guest_data(conn, payload, header.len)
        elif op == OP_RESPONSE and conn.state is State.CONNECTING:
            self._accepted(conn)
        elif op == OP_RST:
            self._close(conn, notify_guest=False)
            return
        elif op == OP_SHUTDOWN:
            self._guest_shutdown(conn, header.flags)
        elif op == OP_CREDIT_REQUEST:
            self._owe_credit(conn)
        elif op == OP_CREDIT_UPDATE:
            pass                                # update_peer() above took its numbers
        else:                                   # REQUEST on a live connection, RESPONSE out of turn
            self._close(conn, reason=f"op {op} in state {conn.state.value}")
            return
        if conn.key in self.conns:
            self._interest(conn)

    def to_guest(self, writable: list[memoryview]) -> int | None:
        """Fill one RX chain with the next packet owed (control first, then host data, round
        robin); the bytes written, or None when nothing is owed (the chain stays unused)."""
        room = sum(map(len, writable))
        if room < HEADER_SIZE:
            return 0                            # useless buffer: give it back empty
        while True:
            if self.backlog:
                packet = self._control(*self.backlog.popleft())
                if packet is not None:
                    write_header(writable, packet)
                    return HEADER_SIZE
                continue
            if not self.ready:
                return None
            if room == HEADER_SIZE:
                return 0                        # room for a header only: no use for data
            conn = self.ready.popleft()
            conn.queued = False
            count = self._read_host(conn, span(writable, HEADER_SIZE, min(room - HEADER_SIZE, MAX_PAYLOAD)))
            if count:
                write_header(writable, self._header(conn, OP_RW, length=count))
                return HEADER_SIZE + count

    def host_connects(self, sock: socket.socket, guest_port: int) -> None:
        """The muxer read `CONNECT <guest_port>`: ask the guest (REQUEST); once it answers
        RESPONSE the host gets `OK <host port>`."""
        if len(self.conns) >= MAX_CONNECTIONS:
            log.warning("vsock: too many connections; host stream closed", limit=MAX_CONNECTIONS)
            sock.close()
            self.on_close()
            return
        port = self._free_port()
        conn = self.conns[(port, guest_port)] = Connection(port, guest_port, sock, State.CONNECTING)
        self._owe(conn.key, OP_REQUEST)
        self._interest(conn)

    def close(self) -> None:
        """The device resets or goes: every host stream closes (the guest's sockets are gone)."""
        for conn in list(self.conns.values()):
            self.poller.remove(conn.fileno())
            conn.close()
        self.conns.clear()
        self.ready.clear()
        self.backlog.clear()

    # --- guest packets -----------------------------------------------------------------------

    def _guest_connects(self, header: Header, key: tuple[int, int]) -> None:
        path = f"{self.socket_path}_{header.dst_port}"
        if len(self.conns) >= MAX_CONNECTIONS:
            log.debug("vsock: too many connections; guest connect refused", limit=MAX_CONNECTIONS, path=path)
            self._owe(key, OP_RST)
            return
        try:
            sock = self.connect(path)
        except OSError as e:
            log.debug("vsock: guest connect refused: nothing listens", path=path, error=e.strerror or str(e))
            self._owe(key, OP_RST)
            return
        conn = self.conns[key] = Connection(key[0], key[1], sock, State.ESTABLISHED)
        conn.update_peer(header.buf_alloc, header.fwd_cnt)
        self._owe(key, OP_RESPONSE)
        self._interest(conn)

    def _accepted(self, conn: Connection) -> None:
        conn.state = State.ESTABLISHED
        conn.say(f"OK {conn.host_port}\n".encode())       # the hybrid protocol's answer (notes §3g)
        self._write_host(conn)

    def _guest_data(self, conn: Connection, payload: list[memoryview], length: int) -> None:
        if not length:
            return
        if conn.state is not State.ESTABLISHED or conn.guest_shut_send:
            self._close(conn, reason="data on a connection not open for it")
            return
        if conn.buffered() + length > BUF_ALLOC:
            self._close(conn, reason=f"{length} bytes past the credit we gave ({BUF_ALLOC - conn.buffered()} left)")
            return
        try:
            conn.take(payload, length)
        except OSError as e:
            self._close(conn, reason=f"host stream: {e.strerror}")
            return
        self._after_write(conn)

    def _guest_shutdown(self, conn: Connection, flags: int) -> None:
        if flags & SHUTDOWN_RCV:
            conn.guest_shut_rcv = True
        if flags & SHUTDOWN_SEND:
            conn.guest_shut_send = True
        self._after_write(conn)

    # --- the host side -----------------------------------------------------------------------

    def _host_event(self, conn: Connection, events: int) -> None:
        """epoll says the host socket can take bytes, has bytes, or hung up. A hang-up
        goes where we listen: the write fails, or the read finds the end."""
        if self.conns.get(conn.key) is not conn:
            return                              # a stale event for a closed connection's fd
        trouble = events & ~(IN | OUT)
        if conn.outbuf and (events & OUT or trouble):
            self._write_host(conn)
            if self.conns.get(conn.key) is not conn:
                return
        if (events & IN or trouble) and conn.mask & IN and not conn.queued:
            conn.queued = True                  # read when an RX buffer is there (to_guest)
            self.ready.append(conn)
        self._interest(conn)

    def _read_host(self, conn: Connection, views: list[memoryview]) -> int:
        """Host bytes straight into the guest's buffer, at most its credit; 0 when none came."""
        if self.conns.get(conn.key) is not conn or conn.state is not State.ESTABLISHED or conn.host_eof \
                or conn.guest_shut_rcv:
            return 0
        credit = conn.peer_credit()
        if credit <= 0:
            self._interest(conn)                # the guest's CREDIT_UPDATE brings us back
            return 0
        try:
            count = conn.read_into(span(views, 0, credit))
        except OSError as e:
            self._close(conn, reason=f"host stream: {e.strerror}")
            return 0
        if count is None:
            self._interest(conn)                # epoll tells us when more comes
            return 0
        if count == 0:
            conn.host_eof = True                # the host shut its side: tell the guest, keep its direction
            self._owe(conn.key, OP_SHUTDOWN, SHUTDOWN_SEND)
            self._after_write(conn)
            return 0
        conn.sent_to_guest(count)
        conn.queued = True                      # maybe more: read again when its turn comes
        self.ready.append(conn)
        return count

    def _write_host(self, conn: Connection) -> None:
        try:
            conn.flush()
        except OSError as e:
            self._close(conn, reason=f"host stream: {e.strerror}")
            return
        self._after_write(conn)

    def _after_write(self, conn: Connection) -> None:
        """What follows the host taking bytes, or a shutdown: credit news for the guest, the
        host's write side shut once the guest's data is all out, the end of the connection."""
        if self.conns.get(conn.key) is not conn:
            return
        if conn.credit_low() and not conn.guest_shut_send:
            self._owe_credit(conn)
        if not conn.outbuf and conn.guest_shut_send and not conn.host_shut_sent:
            conn.shut_host_write()
        done = conn.guest_shut_send and (conn.host_eof or conn.guest_shut_rcv)
        if done and not conn.outbuf:
            # Both directions are over: the reset is what a Linux peer waits for to free its socket.
            self._close(conn)
            return
        self._interest(conn)

    def _interest(self, conn: Connection) -> None:
        mask = conn.events()
        if mask != conn.mask:
            conn.mask = mask
            self.poller.set(conn.fileno(), mask, lambda events, c=conn: self._host_event(c, events))

    # --- packets owed the guest --------------------------------------------------------------

    def _owe(self, key: tuple[int, int], op: int, flags: int = 0) -> None:
        self.backlog.append((key, op, flags))

    def _owe_credit(self, conn: Connection) -> None:
        if not conn.credit_update_queued:
            conn.credit_update_queued = True
            self._owe(conn.key, OP_CREDIT_UPDATE)

    def _control(self, key: tuple[int, int], op: int, flags: int) -> Header | None:
        conn = self.conns.get(key)
        if op == OP_RST:
            self.counters["rst_sent"] += 1
            return Header(HOST_CID, self.cid, key[0], key[1], 0, TYPE_STREAM, OP_RST)
        if conn is None:
            return None                         # closed since: its reset went instead
        if op == OP_CREDIT_UPDATE:
            conn.credit_update_queued = False
        return self._header(conn, op, flags=flags)

    def _header(self, conn: Connection, op: int, *, length: int = 0, flags: int = 0) -> Header:
        conn.told_fwd_cnt = conn.fwd_cnt
        return Header(HOST_CID, self.cid, conn.host_port, conn.guest_port, length, TYPE_STREAM, op, flags,
                      BUF_ALLOC, conn.fwd_cnt)

    # --- endings -----------------------------------------------------------------------------

    def _close(self, conn: Connection, *, notify_guest: bool = True, reason: str | None = None) -> None:
        if reason:
            log.debug("vsock: connection reset", host_port=conn.host_port, guest_port=conn.guest_port, reason=reason)
        self.conns.pop(conn.key, None)
        self.poller.remove(conn.fileno())
        if conn.queued:
            self.ready.remove(conn)
        conn.close()
        if notify_guest:
            self._owe(conn.key, OP_RST)
        self.on_close()

    def _reset_named(self, header: Header, why: str) -> None:
        """A bad packet: reset the connection it names (if any), answer with RST unless it was one."""
        log.debug("vsock: bad packet from the guest", reason=why, src_port=header.src_port, dst_port=header.dst_port)
        key = (header.dst_port, header.src_port)
        conn = self.conns.get(key) if header.dst_cid == HOST_CID else None
        if conn is not None:
            self._close(conn, notify_guest=header.op != OP_RST)
        elif header.op != OP_RST:
            self._owe(key, OP_RST)

    def _drop(self, what: str, error: Exception | None, **fields) -> None:
        self.counters["dropped"] += 1
        log.debug(f"vsock: {what} dropped", error=str(error) if error else None, **fields)

    def _free_port(self) -> int:
        used = {port for port, _ in self.conns}
        while True:
            port = self._next_port
            self._next_port = port + 1 if port + 1 < PORT_LIMIT else FIRST_LOCAL_PORT
            if port not in used:
                return port


def _connect_unix(path: str) -> socket.socket:
    """A non-blocking connect: on a unix socket it completes at once or fails (EAGAIN when
    the listener's backlog is full), so the guest's REQUEST is answered right away."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
    try:
        sock.connect(path)
    except OSError:
        sock.close()
        raise
    return sock
