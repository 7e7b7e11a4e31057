"""The split virtqueue engine, driven by a driver-side helper that lays queues out in
guest memory, and by hypothesis playing a hostile guest (virtio 1.2 §2.7)."""

from __future__ import annotations

import ctypes
import gc
import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugvm.memory import GuestMemory
from plugvm.virtio.queue import (VIRTQ_AVAIL_F_NO_INTERRUPT, VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT,
                                 VIRTQ_DESC_F_WRITE, VIRTQ_USED_F_NO_NOTIFY, Chain, SplitQueue, VirtqueueError)

NEXT, WRITE, INDIRECT = VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_INDIRECT
DESC = struct.Struct("<QIHH")
EXAMPLES = int(os.environ.get("PLUGVM_HYPOTHESIS_EXAMPLES", "10000"))


@pytest.fixture(scope="module", autouse=True, params=["python walk", "C walk"])
def walk(request):
    """Every test twice: with queue.py's own pop(), and with pop() through the C walk
    (plugvm.virtio.c_ring, what a device's C calls), which must keep the same rules and
    give the same chains and messages. Module-scoped, so hypothesis's tests take it too."""
    if request.param == "python walk":
        yield request.param
        return
    python_pop = SplitQueue.pop
    SplitQueue.pop = lambda self: self.c_ring().pop()
    try:
        yield request.param
    finally:
        SplitQueue.pop = python_pop


class Driver:
    """The driver's side of one split queue in a 1 MiB guest: descriptor table at 0,
    avail ring at 0x8000, used ring at 0x9000, data buffers from 0x10000 on."""

    DESC, AVAIL, USED, DATA = 0x0, 0x8000, 0x9000, 0x10000

    def __init__(self, memory: GuestMemory, size: int = 16, event_idx: bool = False, start: int = 0):
        self.memory, self.size, self.event_idx = memory, size, event_idx
        self.avail_idx = self.start = start
        self.free = 0                 # next descriptor slot (the tests never need to free)
        self.heap = self.DATA
        self.set_avail_idx(start)

    def queue(self, **kw) -> SplitQueue:
        kw.setdefault("next_avail", self.start)
        kw.setdefault("next_used", self.start)
        return SplitQueue(self.memory, self.size, self.DESC, self.AVAIL, self.USED, self.event_idx, **kw)

    def buffer(self, data: bytes | int) -> tuple[int, int]:
        """Room in guest RAM holding `data` (or that many zero bytes): (addr, len)."""
        if isinstance(data, int):
            data = bytes(data)
        addr, self.heap = self.heap, self.heap + (len(data) + 15) // 16 * 16 + 16
        self.memory.write(addr, data)
        return addr, len(data)

    def write_desc(self, index: int, addr: int, length: int, flags: int = 0, next: int = 0, table: int = DESC):
        self.memory.write(table + 16 * index, DESC.pack(addr, length, flags, next))

    def chain(self, bufs, table: int | None = None) -> int:
        """Write descriptors for bufs [(addr, len, writable)], linked in order; returns the first."""
        slots = list(range(len(bufs))) if table is not None else [(self.free + i) % self.size for i in range(len(bufs))]
        if table is None:
            table, self.free = self.DESC, self.free + len(bufs)
        for i, (addr, length, write) in enumerate(bufs):
            more = i + 1 < len(bufs)
            self.write_desc(slots[i], addr, length, (WRITE if write else 0) | (NEXT if more else 0),
                            slots[i + 1] if more else 0, table)
        return slots[0]

    def indirect(self, bufs) -> tuple[int, int]:
        """An indirect table for bufs: (addr, len) for the descriptor that refers to it."""
        addr, length = self.buffer(16 * len(bufs))
        self.chain(bufs, table=addr)
        return addr, length

    def publish(self, head: int) -> None:
        self.memory.write(self.AVAIL + 4 + 2 * (self.avail_idx % self.size), struct.pack("<H", head))
        self.set_avail_idx(self.avail_idx + 1)

    def add(self, bufs, indirect: bool = False) -> int:
        if indirect:
            addr, length = self.indirect(bufs)
            head = self.chain([(addr, length, False)])
            self.write_desc(head, addr, length, INDIRECT)
        else:
            head = self.chain(bufs)
        self.publish(head)
        return head

    def set_avail_idx(self, idx: int) -> None:
        self.avail_idx = idx & 0xFFFF
        self.memory.write(self.AVAIL + 2, struct.pack("<H", self.avail_idx))

    def set_avail_flags(self, flags: int) -> None:
        self.memory.write(self.AVAIL, struct.pack("<H", flags))

    def set_used_event(self, value: int) -> None:
        self.memory.write(self.AVAIL + 4 + 2 * self.size, struct.pack("<H", value))

    def used_idx(self) -> int:
        return struct.unpack("<H", self.memory.read(self.USED + 2, 2))[0]

    def used_flags(self) -> int:
        return struct.unpack("<H", self.memory.read(self.USED, 2))[0]

    def avail_event(self) -> int:
        return struct.unpack("<H", self.memory.read(self.USED + 4 + 8 * self.size, 2))[0]

    def used_elem(self, n: int) -> tuple[int, int]:
        return struct.unpack("<II", self.memory.read(self.USED + 4 + 8 * (n % self.size), 8))


@pytest.fixture
def memory():
    mem = GuestMemory(1 << 20)
    yield mem
    gc.collect()              # queues' and chains' views keep the mapping exported
    try:
        mem.close()
    except BufferError:       # a failed test's traceback still holds views
        pass


@pytest.fixture
def driver(memory):
    return Driver(memory)


def host_addr(buf) -> int:
    c = ctypes.c_char.from_buffer(buf)
    try:
        return ctypes.addressof(c)
    finally:
        del c


# --- well-behaved drivers ----------------------------------------------------------------------

def test_empty_queue_pops_none(driver):
    q = driver.queue()
    assert not q.has_available()
    assert q.pop() is None
    assert not q.needs_interrupt()


def test_direct_chain_gives_views_in_order(driver, memory):
    a, b = driver.buffer(b"hello "), driver.buffer(b"world")
    w1, w2 = driver.buffer(3), driver.buffer(5)
    head = driver.add([(*a, False), (*b, False), (*w1, True), (*w2, True)])
    q = driver.queue()
    assert q.has_available()
    chain = q.pop()
    assert isinstance(chain, Chain) and chain.head == head
    assert b"".join(chain.readable) == b"hello world"
    assert [len(v) for v in chain.writable] == [3, 5]
    assert (chain.readable_len, chain.writable_len) == (11, 8)
    chain.writable[1][:] = b"12345"                  # the views are guest RAM itself
    assert memory.read(w2[0], 5) == b"12345"
    assert q.pop() is None and not q.has_available()


def test_indirect_chain(driver):
    r, w = driver.buffer(b"request"), driver.buffer(16)
    head = driver.add([(*r, False), (*w, True)], indirect=True)
    chain = driver.queue().pop()
    assert chain.head == head
    assert [bytes(v) for v in chain.readable] == [b"request"] and chain.writable_len == 16


def test_direct_then_indirect_descriptor_ends_the_chain(driver):
    r1, r2, w = driver.buffer(b"ab"), driver.buffer(b"cd"), driver.buffer(4)
    addr, length = driver.indirect([(*r2, False), (*w, True)])
    head = driver.chain([(*r1, False), (addr, length, False)])
    driver.write_desc(head + 1, addr, length, INDIRECT | WRITE)     # WRITE is ignored here (§2.7.5.3.2)
    driver.publish(head)
    chain = driver.queue().pop()
    assert b"".join(chain.readable) == b"abcd" and chain.writable_len == 4


def test_zero_length_buffers_are_skipped(driver):
    r, w = driver.buffer(b"x"), driver.buffer(2)
    driver.add([(r[0], 0, False), (*r, False), (0xFFFF_FFFF_FFFF_FFFF, 0, True), (*w, True)])
    chain = driver.queue().pop()
    assert [len(v) for v in chain.readable] == [1] and [len(v) for v in chain.writable] == [2]


def test_push_publishes_used_elements_in_order(driver):
    q = driver.queue()
    heads = [driver.add([(*driver.buffer(8), True)]) for _ in range(3)]
    chains = [q.pop() for _ in heads]
    for chain, written in zip(reversed(chains), (1, 2, 3)):      # out-of-order completion
        q.push(chain.head, written)
    assert driver.used_idx() == 3
    assert [driver.used_elem(n) for n in range(3)] == [(heads[2], 1), (heads[1], 2), (heads[0], 3)]


def test_sixteen_bit_indices_wrap(memory):
    driver = Driver(memory, size=4, start=0xFFFE)
    q = driver.queue()
    for round_ in range(3):           # 0xFFFE, 0xFFFF, 0, 1, ... across the wrap
        heads = [driver.add([(*driver.buffer(bytes([round_, i])), False)]) for i in range(4)]
        assert q.has_available()
        chains = [q.pop() for _ in heads]
        assert q.pop() is None
        assert [c.head for c in chains] == heads
        assert [bytes(c.readable[0]) for c in chains] == [bytes([round_, i]) for i in range(4)]
        for c in chains:
            q.push(c.head, 0)
        driver.free = 0
    assert q.next_avail == q.next_used == driver.used_idx() == (0xFFFE + 12) & 0xFFFF


def test_interrupt_without_event_idx_follows_no_interrupt_flag(driver):
    q = driver.queue()
    driver.add([(*driver.buffer(1), True)])
    q.push(q.pop().head, 1)
    assert q.needs_interrupt()
    assert not q.needs_interrupt()            # nothing new pushed since
    driver.set_avail_flags(VIRTQ_AVAIL_F_NO_INTERRUPT)
    driver.add([(*driver.buffer(1), True)])
    q.push(q.pop().head, 1)
    assert not q.needs_interrupt()


@pytest.mark.parametrize("used_event, pushes, expected", [
    (0, 1, True),        # the driver wants to hear about entry 0
    (1, 1, False),       # ... entry 1, not yet pushed
    (1, 2, True),
    (2, 2, False),
    (0xFFFF, 3, False),  # long ago (behind old): already past, no interrupt
])
def test_event_idx_interrupt_suppression(memory, used_event, pushes, expected):
    driver = Driver(memory, event_idx=True)
    q = driver.queue()
    driver.set_used_event(used_event)
    for _ in range(pushes):
        driver.add([(*driver.buffer(1), True)])
        q.push(q.pop().head, 1)
    assert q.needs_interrupt() is expected
    assert not q.needs_interrupt()


def test_event_idx_counts_only_entries_since_last_call(memory):
    driver = Driver(memory, event_idx=True)
    q = driver.queue()
    driver.set_used_event(0)
    driver.add([(*driver.buffer(1), True)])
    q.push(q.pop().head, 1)
    assert q.needs_interrupt()                # entry 0 crossed used_event
    driver.add([(*driver.buffer(1), True)])
    q.push(q.pop().head, 1)
    assert not q.needs_interrupt()            # entry 1 did not; the driver did not move used_event


def test_set_notification_without_event_idx(driver):
    q = driver.queue()
    q.set_notification(False)
    assert driver.used_flags() == VIRTQ_USED_F_NO_NOTIFY
    q.set_notification(True)
    assert driver.used_flags() == 0


def test_avail_event_tracks_next_avail_while_enabled(memory):
    driver = Driver(memory, event_idx=True, start=0xFFFF)
    q = driver.queue()
    assert driver.avail_event() == 0xFFFF
    q.set_notification(False)
    driver.add([(*driver.buffer(1), False)])
    q.pop()
    assert driver.avail_event() == 0xFFFF     # off: avail_event stays behind
    q.set_notification(True)
    assert driver.avail_event() == 0
    driver.add([(*driver.buffer(1), False)])
    q.pop()
    assert driver.avail_event() == 1
    assert driver.used_flags() == 0           # the flag is not used with event_idx


def test_close_releases_the_rings():
    memory = GuestMemory(1 << 20)
    q = Driver(memory).queue()
    q.close()
    memory.close()                            # would raise BufferError with views exported


# --- setup and push errors ---------------------------------------------------------------------

@pytest.mark.parametrize("size, desc, avail, used", [
    (0, 0, 0x8000, 0x9000), (3, 0, 0x8000, 0x9000), (65536, 0, 0x8000, 0x9000),
    (16, 8, 0x8000, 0x9000), (16, 0, 0x8001, 0x9000), (16, 0, 0x8000, 0x9002),
    (16, (1 << 20) - 128, 0x8000, 0x9000),        # desc table runs past the end of RAM
    (16, 0, (1 << 20) - 36, 0x9000),              # avail ring (with used_event) past the end
    (16, 0, 0x8000, (1 << 20) - 132),             # used ring (with avail_event) past the end
    (16, 0, 0x8000, 1 << 64),
])
def test_bad_queue_setup(memory, size, desc, avail, used):
    with pytest.raises(VirtqueueError):
        SplitQueue(memory, size, desc, avail, used, event_idx=True)


@pytest.mark.parametrize("head, written", [(16, 0), (-1, 0), (0, -1), (0, 1 << 32)])
def test_push_rejects_bad_elements(driver, head, written):
    with pytest.raises(VirtqueueError):
        driver.queue().push(head, written)


# --- hostile guests, one rule at a time -------------------------------------------------------

def _head_too_big(d):
    d.publish(16)


def _next_too_big(d):
    d.write_desc(0, d.DATA, 4, NEXT, 16)
    d.publish(0)


def _loop(d):
    d.write_desc(0, d.DATA, 4, NEXT, 1)
    d.write_desc(1, d.DATA, 4, NEXT, 0)
    d.publish(0)


def _self_loop_zero_length(d):
    d.write_desc(3, 0, 0, NEXT, 3)
    d.publish(3)


def _readable_after_writable(d):
    d.add([(d.DATA, 4, True), (d.DATA, 4, False)])


def _zero_length_readable_after_writable(d):
    d.add([(d.DATA, 4, True), (d.DATA, 0, False)])


def _outside_ram(d):
    d.add([((1 << 20) - 2, 4, False)])


def _near_2_64(d):
    d.add([(0xFFFF_FFFF_FFFF_FFF0, 0x20, True)])


def _avail_idx_too_far(d):
    d.add([(d.DATA, 4, False)])
    d.set_avail_idx(d.avail_idx + 16)


def _indirect(d, addr, length, flags=INDIRECT):
    d.write_desc(0, addr, length, flags)
    d.publish(0)


def _indirect_with_next(d):
    addr, length = d.indirect([(d.DATA, 4, False)])
    _indirect(d, addr, length, INDIRECT | NEXT)


def _nested_indirect(d):
    inner = d.indirect([(d.DATA, 4, False)])
    addr, length = d.indirect([(*inner, False)])
    d.write_desc(0, *inner, INDIRECT, table=addr)
    _indirect(d, addr, length)


def _indirect_len_zero(d):
    _indirect(d, d.DATA, 0)


def _indirect_len_odd(d):
    _indirect(d, d.DATA, 24)


def _indirect_outside_ram(d):
    _indirect(d, (1 << 20) - 16, 32)


def _indirect_next_too_big(d):
    addr, length = d.indirect([(d.DATA, 4, False), (d.DATA, 4, False)])
    d.write_desc(1, d.DATA, 4, NEXT, 2, table=addr)
    _indirect(d, addr, length)


def _indirect_loop(d):
    addr, length = d.indirect([(d.DATA, 4, False), (d.DATA, 4, False)])
    d.write_desc(1, d.DATA, 4, NEXT, 0, table=addr)
    _indirect(d, addr, length)


def _over_4_gib(d):
    # 4097 readable 1 MiB buffers, all the same RAM: 2^32 + 2^20 bytes in one chain.
    addr, length = d.indirect([(0, 1 << 20, False)] * 4097)
    _indirect(d, addr, length)


@pytest.mark.parametrize("abuse", [
    _head_too_big, _next_too_big, _loop, _self_loop_zero_length, _readable_after_writable,
    _zero_length_readable_after_writable, _outside_ram, _near_2_64, _avail_idx_too_far,
    _indirect_with_next, _nested_indirect, _indirect_len_zero, _indirect_len_odd,
    _indirect_outside_ram, _indirect_next_too_big, _indirect_loop, _over_4_gib,
], ids=lambda f: f.__name__.strip("_"))
def test_hostile_chain_raises_and_does_not_advance(driver, abuse):
    q = driver.queue()
    abuse(driver)
    with pytest.raises(VirtqueueError):
        q.pop()
    assert q.next_avail == 0
    with pytest.raises(VirtqueueError):
        q.pop()


# --- hypothesis: interrupt suppression against its definition ----------------------------------

@settings(max_examples=min(EXAMPLES, 500), deadline=None)
@given(start=st.integers(0, 0xFFFF), pushes=st.integers(1, 8), used_event=st.integers(0, 0xFFFF))
def test_event_idx_matches_definition(start, pushes, used_event):
    """§2.7.10: interrupt iff one of the entries just pushed (indices old..new-1) is used_event."""
    mem = _hostile_memory()
    mem.regions[0].mapping[:0x1000] = bytes(0x1000)
    q = SplitQueue(mem, 8, H_DESC, H_AVAIL, H_USED, event_idx=True, next_used=start)
    mem.write(H_AVAIL + 4 + 2 * 8, struct.pack("<H", used_event))
    for _ in range(pushes):
        q.push(0, 0)
    assert q.needs_interrupt() == ((used_event - start) & 0xFFFF < pushes)
    q.close()


# --- hypothesis: a hostile guest -----------------------------------------------------------------
# 64 KiB of RAM keeps each example cheap. Descriptor table, rings and two indirect tables sit in
# the first 4 KiB; the rest is a pattern. The oracle is a straightforward reading of §2.7.

RAM = 64 << 10
H_DESC, H_AVAIL, H_USED, H_IND = 0x0, 0x100, 0x200, (0x400, 0x500)
PATTERN = bytes((i * 7 + 3) & 0xFF for i in range(RAM))
_memory: list[GuestMemory] = []


def _hostile_memory() -> GuestMemory:
    if not _memory:
        _memory.append(GuestMemory(RAM))
    return _memory[0]


# One binary draw per example, decoded into interesting values: hypothesis spends far more
# time per draw than the engine spends per pop, and 10000 examples must stay fast.
_LENS = (0, 1, 16, 32, 48, 256, RAM, 2**32 - 1, 2**32 - 16)
DESC_BYTES = 16


def _desc(b: bytes) -> tuple[int, int, int, int]:
    """A descriptor from 16 random bytes: half plausible (a small data buffer, or a reference
    to one of the indirect tables), half hostile, biased towards edges: the end of RAM, the
    top of the 64-bit space, lengths near 2^32, any flags, links out of the table."""
    u16, u32, u64 = (int.from_bytes(b[2:4], "little"), int.from_bytes(b[4:8], "little"),
                     int.from_bytes(b[8:16], "little"))
    kind, link = b[0] & 15, (u64 >> 48) % 18
    if kind < 6:
        return 0x1000 + (u16 & 0xFF0), u32 % 65, (0, NEXT, WRITE, NEXT | WRITE)[b[14] & 3], link
    if kind < 8:
        return H_IND[u16 & 1], 16 * (1 + u32 % 16), INDIRECT | (b[14] & 3 == 3) * NEXT | (b[14] & 4), link
    addr = (0x1000 + u16 % (RAM - 0x1000 + 1), H_IND[u16 & 1], RAM - 48 + u16 % 97, u16,
            2**64 - 64 + u16 % 64, u64, u64 >> (u16 & 63), 0)[b[1] & 7]
    length = (u32 % 65, _LENS[u32 % len(_LENS)], 16 * (u32 % 20), u32, u32 >> (b[1] >> 3), 0)[b[1] % 6]
    flags = int.from_bytes(b[14:16], "little") if b[15] & 0xC0 == 0xC0 else b[14] & 7
    return addr, length, flags, u64 >> 48 if b[15] & 0x30 == 0x30 else link


@st.composite
def hostile_guests(draw):
    size = draw(st.sampled_from([1, 2, 4, 8, 16]))
    n_ind = 16                                    # entries written into each indirect table
    n_desc = size + 2 * n_ind
    raw = draw(st.binary(min_size=DESC_BYTES * n_desc + 10 + 2 * size, max_size=DESC_BYTES * n_desc + 10 + 2 * size))
    descs = [_desc(raw[i:i + DESC_BYTES]) for i in range(0, DESC_BYTES * n_desc, DESC_BYTES)]
    tail = raw[DESC_BYTES * n_desc:]
    start, delta, avail_flags, used_event, knobs = struct.unpack_from("<HHHHH", tail)
    start = (0, 0xFFF0 + (start & 15), start)[knobs % 3]
    # Mostly a legal avail idx and legal heads; sometimes one past the limit, sometimes anything.
    delta = (delta % (size + 2), delta)[knobs >> 4 & 7 == 7] if knobs >> 4 & 3 == 3 else 1 + delta % size
    raw_heads = knobs >> 8 & 7 == 7
    ring = [h if raw_heads else h % (size + (knobs >> 11 & 1)) for h in struct.unpack_from(f"<{size}H", tail, 10)]
    return dict(
        size=size, start=start, event_idx=bool(knobs & 0x80),
        table=descs[:size],
        indirect=[descs[size:size + n_ind], descs[size + n_ind:]],
        ring=ring, avail_idx=(start + delta) & 0xFFFF, avail_flags=avail_flags, used_event=used_event)


class Broken(Exception):
    """The oracle's verdict: the driver broke a rule."""


def oracle_pop(ram, size: int, last: int):
    """(head, [(addr, len, writable)]) for the next chain, None, or Broken."""
    idx, = struct.unpack_from("<H", ram, H_AVAIL + 2)
    if idx == last:
        return None
    if (idx - last) % 65536 > size:
        raise Broken("avail idx")
    head, = struct.unpack_from("<H", ram, H_AVAIL + 4 + 2 * (last % size))
    if head >= size:
        raise Broken("head")
    table, table_len, i, seen, indirect, wrote, total, bufs = H_DESC, size, head, 0, False, False, 0, []
    while True:
        seen += 1
        if seen > table_len:
            raise Broken("loop")
        addr, length, flags, nxt = struct.unpack_from("<QIHH", ram, table + 16 * i)
        if flags & INDIRECT:
            if indirect or flags & NEXT or length == 0 or length % 16 or addr + length > RAM:
                raise Broken("indirect")
            table, table_len, i, seen, indirect = addr, length // 16, 0, 0, True
            continue
        if flags & WRITE:
            wrote = True
        elif wrote:
            raise Broken("order")
        if length:
            total += length
            if addr + length > RAM or total >= 2**32:
                raise Broken("range")
            bufs.append((addr, length, wrote))
        if not flags & NEXT:
            return head, bufs
        i = nxt
        if i >= table_len:
            raise Broken("next")


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(guest=hostile_guests(), push_back=st.booleans())
def test_hostile_guest(guest, push_back):
    mem = _hostile_memory()
    ram = mem.regions[0].mapping
    ram[:] = PATTERN
    size = guest["size"]
    for i, d in enumerate(guest["table"]):
        DESC.pack_into(ram, H_DESC + 16 * i, *d)
    for base, table in zip(H_IND, guest["indirect"]):
        for i, d in enumerate(table):
            DESC.pack_into(ram, base + 16 * i, *d)
    struct.pack_into(f"<HH{size}HH", ram, H_AVAIL, guest["avail_flags"], guest["avail_idx"], *guest["ring"],
                     guest["used_event"])
    before = bytes(ram)
    used_end = H_USED + 4 + 8 * size + 2
    base = host_addr(ram)

    q = SplitQueue(mem, size, H_DESC, H_AVAIL, H_USED, guest["event_idx"],
                   next_avail=guest["start"], next_used=guest["start"])
    last, chain = guest["start"], None
    for _ in range(size + 1):             # at most `size` chains are ever pending
        try:
            expected = oracle_pop(ram, size, last)
        except Broken:
            expected = Broken
        try:
            chain = q.pop()
        except VirtqueueError:
            assert expected is Broken
            assert q.next_avail == last
            break
        if expected is None:
            assert chain is None
            break
        assert expected is not Broken, f"pop() accepted {chain}"
        head, bufs = expected
        assert chain.head == head
        got = [(host_addr(v) - base, len(v), True) for v in chain.writable]
        got[:0] = [(host_addr(v) - base, len(v), False) for v in chain.readable]
        assert got == bufs               # so every view is exactly the guest's range, inside RAM
        last = (last + 1) & 0xFFFF
        assert q.next_avail == last
        if push_back:
            for v in chain.writable:
                v[:] = bytes(v)           # writable, and (same bytes) leaves RAM as it was
            q.push(chain.head, chain.writable_len)
    q.needs_interrupt()
    q.set_notification(False)
    q.set_notification(True)
    del chain
    q.close()
    after = bytes(ram)
    # Only the used ring (the device's own memory) may have changed.
    assert after[:H_USED] == before[:H_USED] and after[used_end:] == before[used_end:]


# --- hypothesis: a well-behaved driver round-trips ---------------------------------------------

_buf = st.tuples(st.binary(min_size=0, max_size=8), st.booleans())


@settings(max_examples=min(EXAMPLES, 300), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(start=st.integers(0, 0xFFFF), chains=st.lists(st.tuples(st.lists(_buf, min_size=1, max_size=4)
                                                                .map(lambda b: sorted(b, key=lambda x: x[1])),
                                                                st.booleans()), min_size=1, max_size=8))
def test_good_driver_round_trips(start, chains):
    if len(_memory) < 2:
        _memory.append(GuestMemory(1 << 20))
    mem = _memory[1]
    mem.regions[0].mapping[:Driver.DATA] = bytes(Driver.DATA)
    d = Driver(mem, size=32, start=start)
    q = d.queue()
    heads = []
    for bufs, indirect in chains:
        heads.append(d.add([(*d.buffer(data), w) for data, w in bufs], indirect))
    for (bufs, _), head in zip(chains, heads):
        chain = q.pop()
        assert chain.head == head
        assert [bytes(v) for v in chain.readable] == [data for data, w in bufs if not w and data]
        assert [len(v) for v in chain.writable] == [len(data) for data, w in bufs if w and data]
        q.push(chain.head, chain.writable_len)
    assert q.pop() is None
    assert d.used_idx() == (start + len(chains)) & 0xFFFF
    assert [d.used_elem(start + n)[0] for n in range(len(chains))] == heads
