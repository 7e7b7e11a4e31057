"""A PCI function's configuration space: the type-0 header with per-byte write masks
and write-1-to-clear bits, memory BARs with hardware sizing semantics, and the
capability list (PCI Local Bus 3.0 §6.1, §6.2.5, §6.7).

API:
    PciConfigError(PlugvmError, ValueError)     a device model's set-up mistake, never the guest's
    Bar(index, size, addr, is_64bit, prefetchable)   dataclass; addr is what the guest decodes now
    PciConfigSpace(*, vendor_id, device_id, class_code, subclass=0, prog_if=0, revision=0,
                   subsystem_vendor_id=0, subsystem_id=0, header_type=0,
                   on_bar_moved: Callable[[int, int, int], None] | None = None)
        .add_bar(index, size, *, is_64bit: bool, prefetchable: bool, addr: int) -> None
            memory BAR; size a power of two >= 16, addr aligned to size; a 64-bit BAR
            also takes register index + 1
        .add_capability(cap_id, body: bytes, on_write=None, writable: bytes | None = None) -> int
            appends [cap_id, next, *body] dword-aligned from 0x40, chains the next
            pointers, sets status bit 4; `writable` is a per-byte mask over body;
            on_write(offset_in_cap, cap_bytes) runs after a guest write inside it
        .bar_address(index) -> int                 the address the guest has programmed
        .bars: dict[int, Bar]
        .on_bar_moved(index, old_addr, new_addr)   optional; see below
        .read(offset, data: memoryview) / .write(offset, data: memoryview)   guest accesses
        .get(offset, size) -> int                  the owner's own view of a register

Guest accesses never raise. Reads outside [0, 4096) return all ones; the extended
space past 256 bytes is empty (zeros). Writes that are not 1, 2 or 4 bytes, cross
a dword, or fall outside the header are ignored — config cycles are at most a
naturally aligned dword.

BAR relocation: the registers always behave like hardware (write ~0 → read the
size mask; write the old value back → the old address). on_bar_moved reports a
new address only once it is settled: memory decode (command bit 1) is on, and the
guest's last write to none of the BAR's registers was the all-ones size probe. Linux sizes and reprograms 64-bit
BARs with decode off, so the callback never sees half-written addresses. Without
the callback the owner keeps its mapping where it allocated it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass

from plugvm.errors import PlugvmError

SIZE = 4096
HEADER_SIZE = 256
VENDOR_ID, DEVICE_ID, COMMAND, STATUS = 0x00, 0x02, 0x04, 0x06
REVISION, PROG_IF, SUBCLASS, CLASS = 0x08, 0x09, 0x0A, 0x0B
CACHE_LINE_SIZE, HEADER_TYPE, BAR0 = 0x0C, 0x0E, 0x10
SUBSYSTEM_VENDOR_ID, SUBSYSTEM_ID = 0x2C, 0x2E
CAPABILITIES_POINTER, INTERRUPT_LINE, INTERRUPT_PIN = 0x34, 0x3C, 0x3D
BAR_COUNT = 6
COMMAND_MEMORY = 1 << 1
# Command: I/O, memory, bus master, SERR, INTx disable are the bits a guest may set.
COMMAND_WRITABLE = 0x0001 | COMMAND_MEMORY | 0x0004 | 0x0100 | 0x0400
STATUS_CAPABILITIES = 1 << 4
# Status bits 8, 11-15 are error flags, RW1C (PCI 3.0 §6.2.3); the rest are read-only.
STATUS_W1C = 0xF900
BAR_MEM64 = 0x4
BAR_PREFETCH = 0x8
CAPABILITY_START = 0x40


class PciConfigError(PlugvmError, ValueError):
    """A device model set up its config space wrongly (a bug, never the guest's doing)."""


@dataclass
class Bar:
    index: int
    size: int
    addr: int
    is_64bit: bool
    prefetchable: bool


class PciConfigSpace:
    """The 4 KiB config space of one function, as the guest sees it."""

    def __init__(self, *, vendor_id: int, device_id: int, class_code: int, subclass: int = 0, prog_if: int = 0,
                 revision: int = 0, subsystem_vendor_id: int = 0, subsystem_id: int = 0, header_type: int = 0,
                 on_bar_moved: Callable[[int, int, int], None] | None = None):
        self.data = bytearray(SIZE)
        self.writable = bytearray(SIZE)       # per-byte mask of guest-writable bits
        self.w1c = bytearray(SIZE)            # per-byte mask of write-1-to-clear bits
        self.bars: dict[int, Bar] = {}
        self.on_bar_moved = on_bar_moved
        self._bar_registers: dict[int, tuple[int, int]] = {}   # register index → (bar index, 0 low / 1 high)
        self._settled: dict[int, int] = {}                      # bar index → last address reported
        self._probing: set[int] = set()                         # BAR registers last written with ~0
        self._next_cap = CAPABILITY_START
        self._last_cap: int | None = None
        self.capability_writes: dict[int, Callable[[int, bytes], None]] = {}   # cap offset → handler
        self._capability_spans: list[tuple[int, int]] = []
        # Re-entrant: a capability handler may read the config space back.
        self._lock = threading.RLock()
        for offset, size, value in ((VENDOR_ID, 2, vendor_id), (DEVICE_ID, 2, device_id), (REVISION, 1, revision),
                                    (PROG_IF, 1, prog_if), (SUBCLASS, 1, subclass), (CLASS, 1, class_code),
                                    (HEADER_TYPE, 1, header_type), (SUBSYSTEM_VENDOR_ID, 2, subsystem_vendor_id),
                                    (SUBSYSTEM_ID, 2, subsystem_id)):
            self._put(offset, size, value)
        self._mask(COMMAND, 2, COMMAND_WRITABLE)
        self.w1c[STATUS:STATUS + 2] = STATUS_W1C.to_bytes(2, "little")
        self._mask(CACHE_LINE_SIZE, 1, 0xFF)
        self._mask(INTERRUPT_LINE, 1, 0xFF)

    def _put(self, offset: int, size: int, value: int) -> None:
        self.data[offset:offset + size] = value.to_bytes(size, "little")

    def get(self, offset: int, size: int) -> int:
        return int.from_bytes(self.data[offset:offset + size], "little")

    def _mask(self, offset: int, size: int, mask: int) -> None:
        self.writable[offset:offset + size] = mask.to_bytes(size, "little")

    # --- set-up by the device model -----------------------------------------------------

    def add_bar(self, index: int, size: int, *, is_64bit: bool, prefetchable: bool, addr: int) -> None:
        """A memory BAR of `size` bytes (a power of two, at least 16) at `addr` (aligned)."""
        last = index + (1 if is_64bit else 0)
        if not 0 <= index <= last < BAR_COUNT or size < 16 or size & (size - 1) or addr % size or addr < 0 \
                or addr >> (64 if is_64bit else 32):
            raise PciConfigError(f"bad BAR {index}: size {size:#x} at {addr:#x} (64-bit: {is_64bit})")
        if any(i in self._bar_registers for i in (index, last)):
            raise PciConfigError(f"BAR {index} overlaps another")
        with self._lock:
            self.bars[index] = Bar(index, size, addr, is_64bit, prefetchable)
            self._bar_registers[index] = (index, 0)
            if is_64bit:
                self._bar_registers[index + 1] = (index, 1)
            self._put(BAR0 + 4 * index, 4, (addr & 0xFFFF_FFF0) | self._bar_flags(self.bars[index]))
            if is_64bit:
                self._put(BAR0 + 4 * index + 4, 4, addr >> 32)
            self._settled[index] = addr

    @staticmethod
    def _bar_flags(bar: Bar) -> int:
        # Bit 0 = 0: memory space; bits 2:1 = 10b for 64-bit; bit 3 prefetchable.
        return (BAR_MEM64 if bar.is_64bit else 0) | (BAR_PREFETCH if bar.prefetchable else 0)

    def add_capability(self, cap_id: int, body: bytes, on_write: Callable[[int, bytes], None] | None = None,
                       writable: bytes | None = None) -> int:
        """Append a capability (id, next, then body); returns its offset."""
        offset = self._next_cap
        end = offset + 2 + len(body)
        if end > HEADER_SIZE:
            raise PciConfigError(f"capability {cap_id:#x} ({len(body) + 2} bytes) does not fit in the header")
        if writable is not None and len(writable) > len(body):
            raise PciConfigError(f"capability {cap_id:#x}: writable mask longer than its body")
        with self._lock:
            self.data[offset] = cap_id
            self.data[offset + 2:end] = body
            if writable is not None:
                self.writable[offset + 2:offset + 2 + len(writable)] = writable
            if self._last_cap is None:
                self.data[CAPABILITIES_POINTER] = offset
                self._put(STATUS, 2, self.get(STATUS, 2) | STATUS_CAPABILITIES)
            else:
                self.data[self._last_cap + 1] = offset
            self._last_cap = offset
            self._next_cap = (end + 3) & ~3      # next pointers have their low 2 bits reserved
            if on_write is not None:
                self.capability_writes[offset] = on_write
            self._capability_spans.append((offset, end))
        return offset

    def bar_address(self, index: int) -> int:
        return self.bars[index].addr

    # --- guest accesses -----------------------------------------------------------------

    def read(self, offset: int, data: memoryview) -> None:
        size = len(data)
        if offset < 0 or offset + size > SIZE:
            data[:] = b"\xff" * size
            return
        with self._lock:
            data[:] = self.data[offset:offset + size]

    def write(self, offset: int, data: memoryview) -> None:
        size = len(data)
        if size not in (1, 2, 4) or offset < 0 or offset + size > HEADER_SIZE or offset % 4 + size > 4:
            return
        raw = bytes(data)
        with self._lock:
            if BAR0 <= offset < BAR0 + 4 * BAR_COUNT:
                self._write_bar((offset - BAR0) // 4, offset % 4, raw)
                return
            decoding = self.get(COMMAND, 2) & COMMAND_MEMORY
            touched = False
            for i, byte in enumerate(raw):
                mask, clear = self.writable[offset + i], self.w1c[offset + i]
                if mask or clear:
                    old = self.data[offset + i]
                    self.data[offset + i] = ((old & ~mask) | (byte & mask)) & ~(byte & clear) & 0xFF
                    touched = True
            if offset <= COMMAND < offset + size and not decoding and self.get(COMMAND, 2) & COMMAND_MEMORY:
                for index in self.bars:
                    self._report_if_settled(index)
            if touched:
                for start, end in self._capability_spans:
                    handler = self.capability_writes.get(start)
                    if handler is not None and start <= offset < end:
                        handler(offset - start, bytes(self.data[start:end]))

    def _write_bar(self, register: int, byte_offset: int, raw: bytes) -> None:
        found = self._bar_registers.get(register)
        if found is None:
            return                   # an unimplemented BAR reads as zero and ignores writes
        index, half = found
        bar = self.bars[index]
        reg_offset = BAR0 + 4 * register
        current = bytearray(self.data[reg_offset:reg_offset + 4])
        current[byte_offset:byte_offset + len(raw)] = raw
        value = int.from_bytes(current, "little")
        if value == 0xFFFF_FFFF:
            self._probing.add(register)
        else:
            self._probing.discard(register)
        # Address bits below the size are hardwired to zero: that is what makes ~0 read back as the size.
        size_mask = ~(bar.size - 1) & 0xFFFF_FFFF_FFFF_FFFF
        if half == 0:
            self._put(reg_offset, 4, (value & size_mask & 0xFFFF_FFF0) | self._bar_flags(bar))
        else:
            self._put(reg_offset, 4, value & (size_mask >> 32))
        low = self.get(BAR0 + 4 * index, 4) & 0xFFFF_FFF0
        high = self.get(BAR0 + 4 * index + 4, 4) if bar.is_64bit else 0
        bar.addr = (high << 32) | low
        if self.get(COMMAND, 2) & COMMAND_MEMORY:
            self._report_if_settled(index)

    def _sizing(self, bar: Bar) -> bool:
        """The guest's last write to one of this BAR's registers was the all-ones size probe."""
        return bar.index in self._probing or (bar.is_64bit and bar.index + 1 in self._probing)

    def _report_if_settled(self, index: int) -> None:
        bar = self.bars[index]
        old = self._settled[index]
        if bar.addr == old or self._sizing(bar):
            return
        self._settled[index] = bar.addr
        if self.on_bar_moved is not None:
            self.on_bar_moved(index, old, bar.addr)
