"""plugvm-vsock's device driven in-process (vsock_rig.py plays the guest's driver) with
real unix sockets: both directions, credit-based flow control with readers that stop,
many connections, shutdown and reset, and a hostile guest."""

from __future__ import annotations

import errno
import hashlib
import os
import select
import socket

import pytest

from plugvm_vsock.connection import BUF_ALLOC
from plugvm_vsock.device import RX, TX
from plugvm_vsock.engine import MAX_BACKLOG
from plugvm_vsock.engine import FIRST_LOCAL_PORT
from plugvm_vsock.packet import (HEADER, HOST_CID, TYPE_STREAM, MAX_PAYLOAD, OP_CREDIT_REQUEST, OP_CREDIT_UPDATE, OP_REQUEST,
                                 OP_RESPONSE, OP_RST, OP_RW, OP_SHUTDOWN, SHUTDOWN_BOTH, SHUTDOWN_SEND)

from vsock_rig import GUEST_CID, RX_BUF, GuestPort, Rig, ops


@pytest.fixture
def rig(tmp_path):
    r = Rig(tmp_path / "vsock.sock")
    yield r
    r.close()


def host_connect(rig, line: bytes) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(rig.device.config.socket))
    s.sendall(line)
    s.settimeout(2)
    return s


def host_listen(rig, port: int) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(f"{rig.device.config.socket}_{port}")
    s.listen(64)
    s.settimeout(2)
    return s


def recv_exactly(s: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = s.recv(n - len(out))
        assert chunk, f"EOF after {len(out)} of {n} bytes"
        out += chunk
    return bytes(out)


def assert_closed(s: socket.socket) -> None:
    """The VMM closed the stream without sending anything (a reset when it left bytes unread)."""
    try:
        assert s.recv(100) == b""
    except ConnectionResetError:
        pass


def open_from_host(rig, port: int = 16, payload: bytes = b"") -> tuple[socket.socket, GuestPort]:
    s = host_connect(rig, b"CONNECT %d\n" % port + payload)
    [(request, _)] = [p for p in rig.pump() if p[0].op == OP_REQUEST]
    assert request.dst_port == port
    guest = rig.accept(request)
    rig.consume(guest, rig.pump())
    line = b""
    while not line.endswith(b"\n"):
        line += s.recv(1)
    assert line == b"OK %d\n" % guest.host_port
    return s, guest


# --- host → guest -------------------------------------------------------------------------------

def test_host_connects_and_bytes_pass_both_ways(rig):
    s, guest = open_from_host(rig, 16, b"HelloWorld!")
    assert guest.host_port == FIRST_LOCAL_PORT
    rig.consume(guest, rig.pump())
    assert guest.data == b"HelloWorld!"
    rig.send(OP_RW, guest.port, guest.host_port, b"back at you")
    assert recv_exactly(s, 11) == b"back at you"
    header = rig.received[0][0]
    assert (header.src_cid, header.dst_cid, header.buf_alloc) == (HOST_CID, GUEST_CID, BUF_ALLOC)


def test_connect_is_case_insensitive_and_may_arrive_in_pieces(rig):
    s = host_connect(rig, b"coNNec")
    assert rig.pump() == []
    s.sendall(b"t 99\npayload")
    [(request, _)] = rig.pump()
    assert request.op == OP_REQUEST and request.dst_port == 99
    guest = rig.accept(request)
    rig.consume(guest, rig.pump())
    assert guest.data == b"payload"


@pytest.mark.parametrize("line", [b"CONNECT\n", b"CONNECT x\n", b"HELLO 16\n", b"CONNECT 16 17\n",
                                  b"CONNECT 99999999999\n", b"CONNECT " + b"1" * 80, b"CONNECT -1\n"])
def test_a_malformed_connect_line_closes_that_stream_only(rig, line):
    good = host_connect(rig, b"CONNECT 5\n")
    bad = host_connect(rig, line)
    packets = rig.pump()
    assert [h.dst_port for h, _ in packets if h.op == OP_REQUEST] == [5]
    assert_closed(bad)
    guest = rig.accept(packets[0][0])
    rig.pump()
    assert good.recv(100).startswith(b"OK ")


def test_a_host_stream_closed_before_its_line_costs_nothing(rig):
    host_connect(rig, b"CONN").close()
    assert rig.pump() == [] and rig.device.muxer.pending == {}


def test_a_guest_that_does_not_listen_gets_the_host_stream_closed(rig):
    s = host_connect(rig, b"CONNECT 16\n")
    [(request, _)] = rig.pump()
    rig.send(OP_RST, request.dst_port, request.src_port)
    rig.pump()
    assert s.recv(100) == b""
    assert rig.device.engine.conns == {}


# --- guest → host -------------------------------------------------------------------------------

def test_guest_connects_to_socket_underscore_port(rig):
    server = host_listen(rig, 1234)
    assert rig.guest_connect(40000, 1234).op == OP_RESPONSE
    peer, _ = server.accept()
    peer.settimeout(2)
    rig.send(OP_RW, 40000, 1234, b"from the guest")
    assert recv_exactly(peer, 14) == b"from the guest"
    peer.sendall(b"from the host")
    got = rig.pump()
    assert [(h.op, h.dst_port, data) for h, data in got] == [(OP_RW, 40000, b"from the host")]


def test_nothing_listening_is_a_reset(rig):
    reply = rig.guest_connect(40000, 4321)
    assert (reply.op, reply.src_port, reply.dst_port) == (OP_RST, 4321, 40000)
    assert rig.device.engine.conns == {}


def test_a_megabyte_each_way_with_its_digest(rig):
    server = host_listen(rig, 7)
    rig.guest_connect(50000, 7)
    peer, _ = server.accept()
    peer.setblocking(False)
    up = os.urandom(1 << 20)
    down = os.urandom(1 << 20)
    guest = GuestPort(50000, 7)
    host_got, sent_up, sent_down, host_fwd = bytearray(), 0, 0, 0
    credit_used = 0
    while len(host_got) < len(up) or len(guest.data) < len(down):
        # The guest sends what the host's credit allows, as a Linux guest would.
        known = [h for h, _ in rig.received if h.src_port == 7]
        host_fwd = known[-1].fwd_cnt if known else 0
        room = BUF_ALLOC - (sent_up - host_fwd)
        while sent_up < len(up) and room > 0:
            n = min(room, MAX_PAYLOAD, len(up) - sent_up)
            rig.send(OP_RW, 50000, 7, up[sent_up:sent_up + n], fwd_cnt=guest.fwd_cnt)
            sent_up += n
            room -= n
        try:
            host_got += peer.recv(1 << 16)
        except BlockingIOError:
            pass
        if sent_down < len(down):
            try:
                sent_down += peer.send(down[sent_down:sent_down + (1 << 16)])
            except BlockingIOError:
                pass
        rig.consume(guest, rig.pump(rounds=5, timeout=0.001))
    assert hashlib.sha256(host_got).digest() == hashlib.sha256(up).digest()
    assert hashlib.sha256(guest.data).digest() == hashlib.sha256(down).digest()


# --- flow control -------------------------------------------------------------------------------

def test_a_host_that_stops_reading_stops_the_guest_not_the_vmm(rig):
    server = host_listen(rig, 9)
    rig.guest_connect(50001, 9)
    peer, _ = server.accept()
    peer.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    conn = rig.device.engine.conns[(9, 50001)]
    # The guest sends until the credit it was told runs out; then it must wait.
    sent, chunk = 0, os.urandom(MAX_PAYLOAD)
    while True:
        known = [h for h, _ in rig.received if h.src_port == 9]
        room = BUF_ALLOC - (sent - known[-1].fwd_cnt)
        if room <= 0:
            break
        rig.send(OP_RW, 50001, 9, chunk[:min(room, MAX_PAYLOAD)])
        sent += min(room, MAX_PAYLOAD)
        rig.pump(rounds=2, timeout=0.001)
    assert 0 < len(conn.outbuf) <= BUF_ALLOC            # bounded: the socket's buffer took the rest
    assert conn.fwd_cnt == sent - len(conn.outbuf)
    # One byte past the credit resets the connection and nothing else.
    rig.send(OP_RW, 50001, 9, b"x")
    assert rig.pump()[-1][0].op == OP_RST and (9, 50001) not in rig.device.engine.conns


def test_draining_the_host_gives_the_guest_credit_again(rig):
    server = host_listen(rig, 9)
    rig.guest_connect(50001, 9)
    peer, _ = server.accept()
    peer.settimeout(2)
    rig.send(OP_RW, 50001, 9, os.urandom(MAX_PAYLOAD))
    rig.send(OP_RW, 50001, 9, os.urandom(MAX_PAYLOAD))
    rig.send(OP_RW, 50001, 9, os.urandom(MAX_PAYLOAD))   # 192 KiB: the told room is under half
    recv_exactly(peer, 3 * MAX_PAYLOAD)
    updates = [h for h, _ in rig.pump() if h.op == OP_CREDIT_UPDATE]
    assert updates and updates[-1].fwd_cnt == 3 * MAX_PAYLOAD


def test_the_guest_never_gets_more_than_its_credit(rig):
    s, guest = open_from_host(rig)
    # The guest's socket has room for 10000 bytes and its application does not read.
    guest.buf_alloc = 10000
    rig.send(OP_CREDIT_UPDATE, guest.port, guest.host_port, buf_alloc=10000)
    s.setblocking(False)
    pushed = 0
    try:
        while pushed < 4 << 20:
            pushed += s.send(b"z" * 65536)
    except BlockingIOError:
        pass
    got = rig.pump()
    assert sum(len(d) for h, d in got if h.op == OP_RW) == 10000
    assert pushed > 10000 + 200_000               # the rest waits in the host socket, not in the VMM
    assert rig.device.poller.dispatch() == 0      # and the VMM stopped listening to it
    # The guest reads and says so: the next 10000 come.
    rig.consume(guest, got)
    more = rig.pump()
    assert sum(len(d) for h, d in more if h.op == OP_RW) == 10000


def test_no_rx_buffers_means_no_reads_and_no_spinning(tmp_path):
    rig = Rig(tmp_path / "v.sock", rx_buffers=0)
    try:
        s = host_connect(rig, b"CONNECT 16\n")
        assert rig.pump(rounds=5) == []             # the REQUEST waits for an RX buffer
        assert rig.device.engine.backlog
        head, [(addr, _)] = rig.rxq.add(writable=[4096 + 44])
        rig.rx_addrs[head] = addr
        rig.device.queue_notify(RX)
        assert ops(rig.take()) == [OP_REQUEST]
    finally:
        rig.close()


def test_credit_request_is_answered(rig):
    s, guest = open_from_host(rig)
    rig.send(OP_CREDIT_REQUEST, guest.port, guest.host_port)
    [(h, _)] = rig.pump()
    assert (h.op, h.buf_alloc, h.fwd_cnt) == (OP_CREDIT_UPDATE, BUF_ALLOC, 0)


# --- many connections ---------------------------------------------------------------------------

def test_32_concurrent_connections_each_way(rig):
    hosts = [host_connect(rig, b"CONNECT %d\n" % (100 + i)) for i in range(32)]
    requests = [h for h, _ in rig.pump() if h.op == OP_REQUEST]
    assert sorted(h.dst_port for h in requests) == list(range(100, 132))
    guests = {h.dst_port: rig.accept(h) for h in requests}
    rig.pump()
    for s in hosts:
        assert s.recv(32).startswith(b"OK ")
    server = host_listen(rig, 2000)
    for i in range(32):
        assert rig.guest_connect(60000 + i, 2000).op == OP_RESPONSE
    peers = [server.accept()[0] for _ in range(32)]
    for i, s in enumerate(hosts):
        s.sendall(b"h%02d" % i)
    for i in range(32):
        rig.send(OP_RW, 60000 + i, 2000, b"g%02d" % i)
    got = rig.pump()
    for i in range(32):
        assert [d for h, d in got if h.dst_port == 100 + i] == [b"h%02d" % i]
    assert sorted(recv_exactly(p, 3) for p in peers) == [b"g%02d" % i for i in range(32)]
    assert len(rig.device.engine.conns) == 64


# --- shutdown and reset -------------------------------------------------------------------------

def test_host_half_close_then_guest_close_ends_with_a_reset(rig):
    s, guest = open_from_host(rig)
    s.shutdown(socket.SHUT_WR)
    [(h, _)] = rig.pump()
    assert (h.op, h.flags) == (OP_SHUTDOWN, SHUTDOWN_SEND)
    rig.send(OP_RW, guest.port, guest.host_port, b"still talking")
    assert recv_exactly(s, 13) == b"still talking"
    rig.send(OP_SHUTDOWN, guest.port, guest.host_port, flags=SHUTDOWN_BOTH)
    assert ops(rig.pump()) == [OP_RST]
    assert s.recv(10) == b"" and rig.device.engine.conns == {}


def test_guest_shutdown_send_shuts_the_host_side_after_its_data(rig):
    server = host_listen(rig, 3)
    rig.guest_connect(41000, 3)
    peer, _ = server.accept()
    peer.settimeout(2)
    rig.send(OP_RW, 41000, 3, b"last words")
    rig.send(OP_SHUTDOWN, 41000, 3, flags=SHUTDOWN_SEND)
    assert recv_exactly(peer, 10) == b"last words" and peer.recv(10) == b""
    peer.sendall(b"reply")                          # the other direction is still open
    assert [d for h, d in rig.pump() if h.op == OP_RW] == [b"reply"]
    peer.close()                                    # host EOF: both directions done
    assert ops(rig.pump()) == [OP_RST]


def test_guest_reset_closes_the_host_stream(rig):
    s, guest = open_from_host(rig)
    rig.send(OP_RST, guest.port, guest.host_port)
    assert s.recv(10) == b"" and rig.device.engine.conns == {}
    assert rig.pump() == []                          # a reset is never answered


def test_host_close_with_data_pending_for_it_resets_the_guest(rig):
    s, guest = open_from_host(rig)
    s.close()
    got = rig.pump()
    assert ops(got) == [OP_SHUTDOWN]
    rig.send(OP_RW, guest.port, guest.host_port, b"to nobody")
    assert ops(rig.pump()) == [OP_RST]


def test_device_reset_closes_every_stream_and_keeps_the_socket(rig):
    s, guest = open_from_host(rig)
    pending = host_connect(rig, b"CONN")
    rig.pump()
    rig.device.reset()
    assert s.recv(10) == b"" and pending.recv(10) == b""
    assert rig.device.config.socket.exists()


# --- a hostile guest ----------------------------------------------------------------------------

def two_connections(rig):
    server = host_listen(rig, 5)
    rig.guest_connect(1000, 5)
    rig.guest_connect(1001, 5)
    victim, bystander = server.accept()[0], server.accept()[0]
    bystander.settimeout(2)
    return victim, bystander


def still_works(rig, bystander):
    rig.send(OP_RW, 1001, 5, b"ok")
    assert recv_exactly(bystander, 2) == b"ok"


@pytest.mark.parametrize("hostile", [
    dict(op=OP_RW, payload=b"abc", length=10),              # len past the chain
    dict(op=OP_RW, payload=b"", length=MAX_PAYLOAD + 1),     # len past the bound
    dict(op=99),                                             # unknown op
    dict(op=0),
    dict(op=OP_RW, payload=b"x", type_=2),                   # SEQPACKET, not negotiated
    dict(op=OP_REQUEST),                                     # REQUEST on a live connection
    dict(op=OP_RESPONSE),                                    # RESPONSE out of turn
])
def test_a_bad_packet_resets_its_connection_only(rig, hostile):
    victim, bystander = two_connections(rig)
    rig.pump()
    rig.send(src_port=1000, dst_port=5, **hostile)
    assert [(h.op, h.dst_port) for h, _ in rig.pump()] == [(OP_RST, 1000)]
    assert victim.recv(10) == b""
    still_works(rig, bystander)


def test_packets_that_name_no_connection(rig):
    victim, bystander = two_connections(rig)
    rig.pump()
    rig.send(OP_RW, 7777, 5, b"nobody")                              # a port without a connection
    rig.send(OP_SHUTDOWN, 1000, 6)
    rig.send(OP_RW, 1000, 5, b"x", dst_cid=7)                        # not the host's CID
    assert [(h.op, h.src_port, h.dst_port, h.src_cid) for h, _ in rig.pump()] == [
        (OP_RST, 5, 7777, HOST_CID), (OP_RST, 6, 1000, HOST_CID), (OP_RST, 5, 1000, HOST_CID)]
    rig.send(OP_RW, 1000, 5, b"spoofed", src_cid=99)                 # not the guest's CID: dropped
    rig.send(OP_RST, 7777, 5)                                        # a reset is not answered
    rig.send(OP_RW, 0, 0, raw=b"\x01" * 20)                          # no header at all: dropped
    assert rig.pump() == []
    assert rig.device.engine.counters["dropped"] == 2
    victim.settimeout(2)
    rig.send(OP_RW, 1000, 5, b"fine")
    assert recv_exactly(victim, 4) == b"fine"
    still_works(rig, bystander)


def test_a_flood_without_rx_buffers_stays_bounded(tmp_path):
    """A guest that sends packets owing resets but gives no RX buffers: the device stops
    taking its TX chains once the backlog is full, and goes on when buffers come."""
    rig = Rig(tmp_path / "v.sock", rx_buffers=0)
    try:
        engine, outstanding, port = rig.device.engine, 0, 0
        rig.send(OP_RW, 1, 1, b"x", src_cid=0)                  # one from the wrong CID: dropped, owes nothing
        for _ in range(100):
            while outstanding < 256:
                rig.txq.add(readable=[HEADER.pack(GUEST_CID, HOST_CID, port, 1, 0, TYPE_STREAM, OP_RW, 0, 0, 0)])
                port, outstanding = port + 1, outstanding + 1
            rig.device.queue_notify(TX)
            used = len(rig.txq.take_used())
            outstanding -= used
            if not used:
                break
        assert len(engine.backlog) == MAX_BACKLOG and outstanding == 256
        for _ in range(64):
            head, [(addr, _)] = rig.rxq.add(writable=[RX_BUF])
            rig.rx_addrs[head] = addr
        rig.device.queue_notify(RX)
        got = rig.take()
        assert len(got) >= 64 and set(ops(got)) == {OP_RST}
        assert rig.txq.take_used()                              # TX moves again
    finally:
        rig.close()


def test_header_and_payload_in_buffers_of_their_own(tmp_path):
    """Older Linux drivers put the header and the payload in two descriptors, both ways."""
    rig = Rig(tmp_path / "v.sock", rx_buffers=0)
    try:
        server = host_listen(rig, 8)
        rig.txq.add(readable=[HEADER.pack(GUEST_CID, HOST_CID, 900, 8, 0, TYPE_STREAM, OP_REQUEST, 0, 65536, 0)])
        rig.txq.add(readable=[HEADER.pack(GUEST_CID, HOST_CID, 900, 8, 5, TYPE_STREAM, OP_RW, 0, 65536, 0)[:40],
                              HEADER.pack(GUEST_CID, HOST_CID, 900, 8, 5, TYPE_STREAM, OP_RW, 0, 65536, 0)[40:]
                              + b"he", b"llo"])
        rig.device.queue_notify(TX)
        peer, _ = server.accept()
        peer.settimeout(2)
        assert recv_exactly(peer, 5) == b"hello"
        peer.sendall(b"w" * 6000)
        chains = [rig.rxq.add(writable=[44, 4096]) for _ in range(3)]
        rig.device.queue_notify(RX)
        fd = rig.device.poller.fileno()
        while select.select([fd], [], [], 0.2)[0]:
            rig.context.watched[fd]()
        used = dict(rig.rxq.take_used())
        seen = b""
        for head, [(hdr_addr, _), (data_addr, _)] in chains:
            header = HEADER.unpack(rig.memory.read(hdr_addr, 44))
            if header[6] == OP_RW:
                assert used[head] == 44 + header[4]
                seen += rig.memory.read(data_addr, header[4])
        assert seen == b"w" * 6000
    finally:
        rig.close()


def test_out_of_fds_pauses_the_listener_until_a_stream_closes(rig, monkeypatch):
    s, guest = open_from_host(rig, 16)
    real = rig.device.listener.accept

    def emfile():
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))
    monkeypatch.setattr(rig.device.listener, "accept", emfile)
    waiting = host_connect(rig, b"CONNECT 17\n")
    assert rig.pump() == [] and rig.device.muxer.paused          # no spinning on the readable listener
    monkeypatch.setattr(rig.device.listener, "accept", real)
    rig.send(OP_RST, guest.port, guest.host_port)                 # a stream closes: an fd is free
    assert [h.dst_port for h, _ in rig.pump() if h.op == OP_REQUEST] == [17]


def test_rx_chains_too_small_for_data_are_given_back_empty(tmp_path):
    rig = Rig(tmp_path / "v.sock", rx_buffers=0)
    try:
        s = host_connect(rig, b"CONNECT 16\n")
        tiny = [rig.rxq.add(writable=[size])[0] for size in (20, 44, 44)]
        fd = rig.device.poller.fileno()
        while select.select([fd], [], [], 0.1)[0]:
            rig.context.watched[fd]()
        used = rig.rxq.take_used()
        assert used[:2] == [(tiny[0], 0), (tiny[1], 44)]         # no header fits; the REQUEST
        request = HEADER.unpack(rig.memory.read(rig.rxq.desc_addr(tiny[1]), 44))
        rig.send(OP_RESPONSE, request[3], request[2])
        s.sendall(b"data")
        while select.select([fd], [], [], 0.1)[0]:
            rig.context.watched[fd]()
        assert (tiny[2], 0) in rig.rxq.take_used() + used           # a header alone carries no data
    finally:
        rig.close()
