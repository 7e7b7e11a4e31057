"""The vhost-user Frontend against a fake backend on a thread (a socketpair): the
connect-time and activation sequences with the fds the backend receives, REPLY_ACK,
bad replies, a backend that dies or goes silent, and connecting with retries."""

import mmap
import os
import socket
import threading
import time

import pytest

from plugvm.memory import Backing, GuestMemory
from plugvm.vhost_user import (BackendGone, BackendLimitError, BackendNack, BackendTimeout, ConnectError, Frontend,
                               MemoryTable, ReplyError, VringConfig)
from plugvm.vhost_user import protocol as p
from plugvm.vhost_user.connection import Connection
from plugvm.vhost_user.memory_table import host_address
from plugvm.vhost_user.protocol import F_PROTOCOL_FEATURES, ProtocolFeature, Request
from vhost_user_fake import ALL_WE_SUPPORT, VIRTIO_F_VERSION_1, FakeBackend, reply

MiB = 1 << 20


@pytest.fixture
def pair():
    """(make(**fake_backend_options) -> (Frontend, FakeBackend)); closes both after."""
    made = []

    def make(reply_timeout=2.0, **options):
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        backend = FakeBackend(theirs, **options)
        frontend = Frontend(Connection(ours, "fake.sock", reply_timeout))
        made.append((frontend, backend))
        return frontend, backend
    yield make
    for frontend, backend in made:
        frontend.close()
        backend.close()


@pytest.fixture
def memory():
    m = GuestMemory(16 * MiB, backing=Backing(shared=True))
    yield m
    m.close()


@pytest.fixture
def eventfds():
    fds = [os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK) for _ in range(4)]
    yield fds
    for fd in fds:
        os.close(fd)


def same_eventfd(received: int, ours: int) -> bool:
    """Whether the fd the backend got is our eventfd: a count written there reaches ours."""
    os.eventfd_write(received, 7)
    return os.eventfd_read(ours) == 7


def queues(table: MemoryTable, kicks: list[int], calls: list[int]) -> list[VringConfig]:
    return [VringConfig(i, 256, table.user_address(0x10000 * (i + 1)), table.user_address(0x10000 * (i + 1) + 4096),
                        table.user_address(0x10000 * (i + 1) + 8192), kicks[i], calls[i], base=i * 3)
            for i in range(len(kicks))]


def test_negotiate_with_protocol_features(pair):
    frontend, backend = pair()
    result = frontend.negotiate()
    assert backend.requests() == ["SET_OWNER", "GET_FEATURES", "GET_PROTOCOL_FEATURES", "SET_PROTOCOL_FEATURES",
                                  "GET_QUEUE_NUM", "GET_MAX_MEM_SLOTS"]
    assert result.features == F_PROTOCOL_FEATURES | VIRTIO_F_VERSION_1
    assert result.offered_protocol_features == ALL_WE_SUPPORT | ProtocolFeature.LOG_SHMFD.mask
    assert result.protocol_features == ALL_WE_SUPPORT          # LOG_SHMFD cut: we do not support it
    assert (result.queue_num, result.max_mem_slots) == (2, 32)
    set_protocol = backend.received[3]
    assert p.unpack_u64(set_protocol.payload) == ALL_WE_SUPPORT
    # REPLY_ACK is asked for only once it is in force: not on SET_OWNER nor SET_PROTOCOL_FEATURES.
    assert [m.flags for m in backend.received[:4]] == [p.VERSION] * 4


def test_negotiate_without_protocol_features(pair):
    frontend, backend = pair(features=VIRTIO_F_VERSION_1)
    result = frontend.negotiate()
    assert backend.requests() == ["SET_OWNER", "GET_FEATURES"]
    assert (result.protocol_features, result.queue_num, result.max_mem_slots) == (0, None, None)


def test_negotiate_refuses_a_backend_with_too_few_queues(pair):
    frontend, _ = pair(queue_num=1)
    with pytest.raises(BackendLimitError, match="has 1 queues, the device needs 2"):
        frontend.negotiate(queues=2)


def test_activate_sends_the_sequence_with_the_right_fds(pair, memory, eventfds):
    frontend, backend = pair()
    frontend.negotiate()
    table = MemoryTable.of(memory)
    kicks, calls = eventfds[:2], eventfds[2:]
    frontend.activate(VIRTIO_F_VERSION_1, table.regions, queues(table, kicks, calls))
    sent = backend.received[6:]
    per_queue = ["SET_VRING_NUM", "SET_VRING_ADDR", "SET_VRING_BASE", "SET_VRING_CALL", "SET_VRING_KICK"]
    assert [Request(m.request).name for m in sent] == (["SET_FEATURES", "SET_MEM_TABLE"] + per_queue * 2
                                                       + ["SET_VRING_ENABLE"] * 2)
    assert all(m.flags == p.VERSION | p.FLAG_NEED_REPLY for m in sent)      # REPLY_ACK on each
    assert p.unpack_u64(sent[0].payload) == VIRTIO_F_VERSION_1 | F_PROTOCOL_FEATURES

    # The memory table: the region's guest address, our mapping's address, and our memfd.
    (region,) = p.unpack_memory_table(sent[1].payload)
    assert region == p.MemoryRegion(0, 16 * MiB, host_address(memory.regions[0].mapping), 0)
    (memfd,) = sent[1].fds
    assert os.fstat(memfd).st_ino == os.fstat(memory.fd).st_ino
    with mmap.mmap(memfd, 4096, mmap.MAP_SHARED) as theirs:
        theirs[100:105] = b"hello"
    assert memory.read(100, 5) == b"hello"

    for i in range(2):
        num, addr, base, call, kick = sent[2 + 5 * i: 7 + 5 * i]
        assert p.unpack_vring_state(num.payload) == (i, 256)
        assert p.unpack_vring_address(addr.payload) == p.VringAddress(
            i, region.user_addr + 0x10000 * (i + 1), region.user_addr + 0x10000 * (i + 1) + 8192,
            region.user_addr + 0x10000 * (i + 1) + 4096)
        assert p.unpack_vring_state(base.payload) == (i, i * 3)
        assert p.unpack_vring_fd(call.payload) == (i, True) and same_eventfd(call.fds[0], calls[i])
        assert p.unpack_vring_fd(kick.payload) == (i, True) and same_eventfd(kick.fds[0], kicks[i])
    assert [p.unpack_vring_state(m.payload) for m in sent[12:]] == [(0, 1), (1, 1)]


def test_activate_without_protocol_features_has_no_enable_and_no_acks(pair, memory, eventfds):
    frontend, backend = pair(features=VIRTIO_F_VERSION_1)
    frontend.negotiate()
    table = MemoryTable.of(memory)
    frontend.activate(VIRTIO_F_VERSION_1, table.regions, queues(table, eventfds[:1], eventfds[2:3]))
    sent = backend.wait(9)[2:]
    assert [Request(m.request).name for m in sent] == ["SET_FEATURES", "SET_MEM_TABLE", "SET_VRING_NUM",
                                                       "SET_VRING_ADDR", "SET_VRING_BASE", "SET_VRING_CALL",
                                                       "SET_VRING_KICK"]
    assert all(m.flags == p.VERSION for m in sent)
    assert p.unpack_u64(sent[0].payload) == VIRTIO_F_VERSION_1


def test_a_queue_without_fds_sets_the_nofd_bit(pair):
    frontend, backend = pair(features=VIRTIO_F_VERSION_1)
    frontend.set_vring_kick(1, None)
    frontend.set_vring_err(2, -1)
    msgs = backend.wait(2)
    assert [(p.unpack_vring_fd(m.payload), m.fds) for m in msgs] == [((1, False), []), ((2, False), [])]


def test_deactivate_disables_and_reads_the_bases(pair):
    frontend, backend = pair()
    frontend.negotiate()
    backend.bases = {0: 5, 1: 9}
    assert frontend.deactivate([0, 1]) == {0: 5, 1: 9}
    assert backend.requests()[6:] == ["SET_VRING_ENABLE", "GET_VRING_BASE"] * 2
    assert p.unpack_vring_state(backend.received[6].payload) == (0, 0)


def test_deactivate_tolerates_a_backend_that_is_gone(pair):
    frontend, backend = pair(script={Request.GET_VRING_BASE: lambda m: "close" if m.payload[0] == 1 else None})
    frontend.negotiate()
    backend.bases = {0: 4}
    assert frontend.deactivate([0, 1, 2]) == {0: 4}


def test_add_region_uses_add_mem_reg_with_memory_slots(pair, memory):
    frontend, backend = pair()
    frontend.negotiate()
    table = MemoryTable.of(memory)
    frontend.set_memory(table.regions)
    added = table.add(memory, memory.add_region(1 << 32, 4 * MiB))
    frontend.add_region(added)
    msg = backend.received[-1]
    assert Request(msg.request).name == "ADD_MEM_REG"
    assert p.unpack_single_region(msg.payload) == p.MemoryRegion(1 << 32, 4 * MiB, added.user_addr, 0)
    assert os.fstat(msg.fds[0]).st_ino == os.fstat(memory.regions[1].fd).st_ino
    assert frontend.table == table.regions


def test_add_region_sends_a_whole_table_without_memory_slots(pair, memory):
    frontend, backend = pair(protocol_features=ProtocolFeature.REPLY_ACK.mask)
    frontend.negotiate()
    table = MemoryTable.of(memory)
    frontend.set_memory(table.regions)
    frontend.add_region(table.add(memory, memory.add_region(1 << 32, 4 * MiB)))
    msg = backend.received[-1]
    assert Request(msg.request).name == "SET_MEM_TABLE"
    assert [r.guest_addr for r in p.unpack_memory_table(msg.payload)] == [0, 1 << 32]
    assert [os.fstat(fd).st_ino for fd in msg.fds] == [os.fstat(r.fd).st_ino for r in memory.regions]


def test_add_region_past_eight_without_memory_slots_is_refused(pair, memory):
    frontend, _ = pair(features=VIRTIO_F_VERSION_1)
    table = MemoryTable.of(memory)
    for i in range(7):
        table.add(memory, memory.add_region((1 << 32) + i * 4 * MiB, 4 * MiB))
    frontend.set_memory(table.regions)
    with pytest.raises(BackendLimitError, match="can map 8 memory regions, guest RAM now has 9"):
        frontend.add_region(table.add(memory, memory.add_region(1 << 33, 4 * MiB)))


def test_a_nack_raises_backend_nack(pair, memory):
    frontend, backend = pair()
    frontend.negotiate()
    backend.acks[Request.SET_MEM_TABLE] = 1
    with pytest.raises(BackendNack, match="refused SET_MEM_TABLE") as caught:
        frontend.set_memory(MemoryTable.of(memory).regions)
    assert caught.value.status == 1 and caught.value.request == "SET_MEM_TABLE"


@pytest.mark.parametrize("bad, match", [
    (reply(Request.GET_QUEUE_NUM, p.pack_u64(1)), "request code 17"),
    (reply(Request.GET_FEATURES, p.pack_u64(1), flags=p.VERSION), "without the REPLY flag"),
    (reply(Request.GET_FEATURES, p.pack_u64(1), flags=2 | p.FLAG_REPLY), "version 2"),
    (reply(Request.GET_FEATURES, b"\x01\x00\x00\x00"), "4-byte payload, not 8"),
    (reply(Request.GET_FEATURES, b"", size=1 << 20), "above 4096"),
])
def test_a_reply_that_does_not_match_raises_reply_error(pair, bad, match):
    frontend, _ = pair(script={Request.GET_FEATURES: lambda m: bad})
    with pytest.raises(ReplyError, match=match) as caught:
        frontend.get_features()
    assert caught.value.request == "GET_FEATURES" and "fake.sock" in str(caught.value)
    with pytest.raises(BackendGone):        # the spec: a wrong reply closes the connection
        frontend.get_features()


@pytest.mark.parametrize("partial, match", [
    (reply(Request.GET_FEATURES, p.pack_u64(1))[:16], "end of file after 4 of 8 bytes"),
    (reply(Request.GET_FEATURES, p.pack_u64(1))[:5], "end of file after 5 of 12 bytes"),
])
def test_a_short_reply_then_eof_is_backend_gone(pair, partial, match):
    def short_then_close(msg):
        backend.sock.sendall(partial)
        return "close"
    frontend, backend = pair(script={Request.GET_FEATURES: short_then_close})
    with pytest.raises(BackendGone, match=match):
        frontend.get_features()


def test_a_backend_closing_mid_negotiation_is_backend_gone(pair):
    frontend, _ = pair(script={Request.GET_PROTOCOL_FEATURES: lambda m: "close"})
    with pytest.raises(BackendGone, match="gone .end of file. during GET_PROTOCOL_FEATURES"):
        frontend.negotiate()
    with pytest.raises(BackendGone, match="send failed"):       # and so is the next request (EPIPE)
        frontend.set_owner()


def test_a_silent_backend_times_out(pair):
    frontend, _ = pair(reply_timeout=0.3, script={Request.GET_FEATURES: lambda m: "silent"})
    start = time.monotonic()
    with pytest.raises(BackendTimeout, match="no reply to GET_FEATURES within 0.3 s"):
        frontend.get_features()
    assert time.monotonic() - start < 1.5
    with pytest.raises(BackendGone):        # a late reply must not answer the next request
        frontend.get_queue_num()


def test_threads_share_a_frontend(pair):
    frontend, _ = pair(features=0x1234 | F_PROTOCOL_FEATURES, queue_num=7)
    frontend.negotiate()
    results = []

    def hammer(call, n=50):
        results.extend(call() for _ in range(n))
    threads = [threading.Thread(target=hammer, args=(c,)) for c in (frontend.get_features, frontend.get_queue_num)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(set(results)) == [7, 0x1234 | F_PROTOCOL_FEATURES] and len(results) == 100


def test_the_socket_shows_eof_when_the_backend_dies(pair):
    import select
    frontend, backend = pair()
    backend.close()
    assert select.select([frontend], [], [], 1)[0] == [frontend]


def _listen_later(path, delay, bind_first=False):
    """A listener at path after `delay` s (bound at once but not listening if bind_first:
    connect then gets ECONNREFUSED rather than ENOENT)."""
    server = socket.socket(socket.AF_UNIX)
    if bind_first:
        server.bind(str(path))

    def later():
        time.sleep(delay)
        if not bind_first:
            server.bind(str(path))
        server.listen()
        conn, _ = server.accept()
        conn.sendall(reply(Request.GET_FEATURES, p.pack_u64(42)))
        conn.recv(100)
        conn.close()
    threading.Thread(target=later, daemon=True).start()
    return server


@pytest.mark.parametrize("bind_first", [False, True], ids=["ENOENT", "ECONNREFUSED"])
def test_connect_retries_until_the_backend_listens(tmp_path, bind_first):
    path = tmp_path / "backend.sock"
    server = _listen_later(path, 0.3, bind_first)
    start = time.monotonic()
    frontend = Frontend.connect(path, timeout=5, interval=0.05)
    assert 0.25 < time.monotonic() - start < 3
    assert frontend.get_features() == 42
    frontend.close()
    server.close()


def test_connect_to_nothing_fails_within_the_timeout(tmp_path):
    path = tmp_path / "nobody.sock"
    start = time.monotonic()
    with pytest.raises(ConnectError, match=f"cannot connect to {path} within 0.4 s: No such file") as caught:
        Frontend.connect(path, timeout=0.4, interval=0.1)
    assert 0.35 < time.monotonic() - start < 1.0
    assert isinstance(caught.value, ConnectionError)


def test_connect_does_not_retry_what_waiting_cannot_fix(tmp_path):
    start = time.monotonic()
    with pytest.raises(ConnectError, match="cannot connect to .*: Not a directory"):
        (tmp_path / "file").write_text("")
        Frontend.connect(tmp_path / "file" / "sock", timeout=5)
    assert time.monotonic() - start < 1
