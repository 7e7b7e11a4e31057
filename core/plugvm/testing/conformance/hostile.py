"""Hostile split queues for the property test of VirtioDeviceTests: hypothesis lays out
descriptor tables, indirect tables and avail rings in guest memory — well-formed chains
mixed with bad addresses (past guest RAM, near 2^64), huge lengths, loops, stray flags,
heads past the table, avail.idx jumps — and this module says, by its own permissive walk
of what was offered, which bytes a device may write: the writable buffers reachable from
the offered heads, and the used ring. Anything else that changed is the device's fault."""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from hypothesis import strategies as st

from plugvm.virtio.queue import VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE

DESC = struct.Struct("<QIHH")
MiB = 1 << 20
MEMORY_SIZE = 4 * MiB
MAX_QUEUES = 8
QUEUE_STRIDE = 0x10000          # per queue: desc at +0, avail +0x1000, used +0x2000, indirect tables +0x3000
INDIRECT_TABLES = 4
INDIRECT_ENTRIES = 8
DATA_BASE = 0x100000             # per queue: 256 KiB of buffers from DATA_BASE + i * DATA_STRIDE
DATA_STRIDE = 0x40000
SIZES = (1, 2, 4, 8, 16)


@dataclass
class QueueLayout:
    """One queue as the hostile driver laid it out."""

    index: int
    size: int
    heads: list[int] = field(default_factory=list)        # the avail ring entries below avail.idx

    @property
    def desc(self) -> int:
        return self.index * QUEUE_STRIDE

    @property
    def avail(self) -> int:
        return self.desc + 0x1000

    @property
    def used(self) -> int:
        return self.desc + 0x2000

    @property
    def used_bytes(self) -> int:
        return 4 + 8 * self.size + 2          # flags, idx, ring, avail_event

    def indirect(self, table: int) -> int:
        return self.desc + 0x3000 + table * 16 * INDIRECT_ENTRIES

    @property
    def data(self) -> int:
        return DATA_BASE + self.index * DATA_STRIDE


def _addresses(layout: QueueLayout):
    return st.one_of(st.integers(layout.data, layout.data + DATA_STRIDE - 1),      # a buffer in RAM
                     st.integers(MEMORY_SIZE - 4096, MEMORY_SIZE + 4096),         # straddling RAM's end
                     st.integers(2**64 - 4096, 2**64 - 1),                         # wrapping past 2^64
                     st.integers(0, 2**64 - 1))


LENGTHS = st.one_of(st.integers(0, 64), st.integers(0, 8192), st.just(0xFFFF_FFFF), st.integers(0, 2**32 - 1))
FLAGS = st.one_of(st.sampled_from([0, VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, VIRTQ_DESC_F_NEXT | VIRTQ_DESC_F_WRITE,
                                   VIRTQ_DESC_F_INDIRECT, VIRTQ_DESC_F_INDIRECT | VIRTQ_DESC_F_NEXT]),
                  st.integers(0, 0xFFFF))


def lay_out(draw, memory, layout: QueueLayout, samples: list[bytes], event_idx: bool) -> None:
    """Write one hostile queue into `memory` (zeroed by the caller)."""
    size = layout.size
    tables = {0: [None] * size}              # table 0 is the queue's own; 1.. are indirect
    heads = []
    data = layout.data
    free = list(range(size))
    payload = st.binary(max_size=64) if not samples else st.one_of(st.binary(max_size=64), st.sampled_from(samples))
    # Well-formed chains first, so that devices get requests they act on (and write).
    for _ in range(draw(st.integers(0, min(size, 4)))):
        readable = draw(st.lists(payload, max_size=3))
        writable = draw(st.lists(st.integers(0, 2048), max_size=3))
        parts = [(bytes(b), 0) for b in readable] + [(n, VIRTQ_DESC_F_WRITE) for n in writable] or [(b"", 0)]
        descs = []
        for content, flags in parts:
            length = len(content) if flags == 0 else content
            if data + length > layout.data + DATA_STRIDE:
                break
            if flags == 0:
                memory.write(data, content)
            descs.append((data, length, flags))
            data += max(length, 1)
        if not descs or not free:
            break
        table_count = len(tables) - 1
        if len(descs) <= INDIRECT_ENTRIES and table_count < INDIRECT_TABLES and draw(st.booleans()):
            table = table_count + 1
            tables[table] = [(a, n, f | (VIRTQ_DESC_F_NEXT if i + 1 < len(descs) else 0), i + 1 if i + 1 < len(descs)
                              else 0) for i, (a, n, f) in enumerate(descs)]
            head = free.pop(0)
            tables[0][head] = (layout.indirect(table - 1), 16 * len(descs), VIRTQ_DESC_F_INDIRECT, 0)
        else:
            if len(descs) > len(free):
                break
            slots = [free.pop(0) for _ in descs]
            for i, (a, n, f) in enumerate(descs):
                more = i + 1 < len(descs)
                tables[0][slots[i]] = (a, n, f | (VIRTQ_DESC_F_NEXT if more else 0), slots[i + 1] if more else 0)
            head = slots[0]
        heads.append(head)
    # The rest of the table is garbage, and some well-formed descriptors are then broken.
    addresses = _addresses(layout)
    garbage = st.tuples(addresses, LENGTHS, FLAGS, st.integers(0, size + 1))
    for slot in free:
        tables[0][slot] = draw(garbage)
    for _ in range(draw(st.integers(0, 3))):
        table = draw(st.sampled_from(sorted(tables)))
        index = draw(st.integers(0, len(tables[table]) - 1))
        addr, length, flags, nxt = tables[table][index]
        part = draw(st.sampled_from(["addr", "len", "flags", "next", "loop"]))
        if part == "addr":
            addr = draw(addresses)
        elif part == "len":
            length = draw(LENGTHS)
        elif part == "flags":
            flags = draw(FLAGS)
        elif part == "next":
            nxt = draw(st.integers(0, size + 1))
        else:                                   # a chain that comes back to itself
            flags, nxt = flags | VIRTQ_DESC_F_NEXT, index
        tables[table][index] = (addr, length, flags, nxt)
    for table, descs in tables.items():
        base = layout.desc if table == 0 else layout.indirect(table - 1)
        memory.write(base, b"".join(DESC.pack(*d) for d in descs))
    # The avail ring: the heads, perhaps stray ones, and an idx that may jump.
    ring = heads + draw(st.lists(st.integers(0, size + 1), max_size=2))
    ring = ring[:size]
    idx = draw(st.one_of(st.just(len(ring)), st.integers(0, 0xFFFF)))
    flags = draw(st.integers(0, 3))
    full = ring + [0] * (size - len(ring))
    memory.write(layout.avail, struct.pack(f"<HH{size}H", flags, idx, *full))
    if event_idx:
        memory.write(layout.avail + 4 + 2 * size, struct.pack("<H", draw(st.integers(0, 0xFFFF))))
    # What the device's queue can take: the first idx entries, none when idx jumps past the size.
    layout.heads = full[:idx] if idx <= size else []


class Snapshot:
    """Guest memory as it was before the device ran (the tables the walk reads)."""

    def __init__(self, data: bytes):
        self.data = data

    def read(self, addr: int, length: int) -> bytes:
        if not 0 <= addr <= addr + length <= len(self.data):
            raise ValueError(f"{addr:#x}+{length:#x} is not in guest memory")
        return self.data[addr:addr + length]


def walk(memory, layout: QueueLayout, head: int) -> list[tuple[int, int]]:
    """(addr, len) of every writable descriptor reachable from `head`, following NEXT and
    INDIRECT more permissively than the device's queue does (loops end at a repeat), so
    that it over-approximates what the device was given."""
    found, seen = [], set()

    def table_entry(base: int, count: int, index: int):
        if index >= count or (base, index) in seen:
            return None
        seen.add((base, index))
        try:
            return DESC.unpack(memory.read(base + 16 * index, 16))
        except ValueError:
            return None

    stack = [(layout.desc, layout.size, head)]
    while stack:
        base, count, index = stack.pop()
        entry = table_entry(base, count, index)
        if entry is None:
            continue
        addr, length, flags, nxt = entry
        if flags & VIRTQ_DESC_F_INDIRECT:
            if length % 16 == 0 and 0 < length <= 16 * 32768:
                stack.append((addr, length // 16, 0))
        elif flags & VIRTQ_DESC_F_WRITE and length:
            found.append((addr, length))
        if flags & VIRTQ_DESC_F_NEXT:
            stack.append((base, count, nxt))
    return found


def changed_ranges(before: bytes, after: bytes, page: int = 4096) -> list[tuple[int, int]]:
    """(addr, length) of each run of bytes that differ."""
    runs = []
    for start in range(0, len(before), page):
        old, new = before[start:start + page], after[start:start + page]
        if old == new:
            continue
        i = 0
        while i < len(old):
            if old[i] != new[i]:
                j = i
                while j < len(old) and old[j] != new[j]:
                    j += 1
                if runs and runs[-1][0] + runs[-1][1] == start + i:
                    runs[-1] = (runs[-1][0], runs[-1][1] + j - i)
                else:
                    runs.append((start + i, j - i))
                i = j
            else:
                i += 1
    return runs


def outside(runs: list[tuple[int, int]], allowed: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of `runs` not covered by any of the `allowed` ranges."""
    left = []
    for addr, length in runs:
        pieces = [(addr, addr + length)]
        for a, n in allowed:
            pieces = [p for lo, hi in pieces for p in ((lo, min(hi, a)), (max(lo, a + n), hi)) if p[0] < p[1]]
        left += [(lo, hi - lo) for lo, hi in pieces]
    return left
