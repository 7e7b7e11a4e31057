"""A PCI function's configuration space: the type-0 header with per-byte write masks,
BARs with hardware sizing semantics, and the capability list.

Every guest access lands in read()/write() and never raises: out-of-range bytes
read as zero (past 256: the extended space, which plugvm leaves empty) and
writes to read-only bits do nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from plugvm.errors import PlugvmError

SIZE = 4096
HEADER_SIZE = 256
VENDOR_ID, DEVICE_ID, COMMAND, STATUS = 0x00, 0x02, 0x04, 0x06
REVISION, PROG_IF, SUBCLASS, CLASS = 0x08, 0x09, 0x0A, 0x0B
HEADER_TYPE, BAR0 = 0x0E, 0x10
SUBSYSTEM_VENDOR_ID, SUBSYSTEM_ID = 0x2C, 0x2E
CAPABILITIES_POINTER, INTERRUPT_LINE, INTERRUPT_PIN = 0x34, 0x3C, 0x3D
STATUS_CAPABILITIES = 1 << 4
# Command: I/O, memory, bus master, SERR, INTx disable are the bits a guest may set.
COMMAND_WRITABLE = 0x0001 | 0x0002 | 0x0004 | 0x0100 | 0x0400
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
    def __init__(self, *, vendor_id: int, device_id: int, class_code: int, subclass: int = 0, prog_if: int = 0,
                 revision: int = 0, subsystem_vendor_id: int = 0, subsystem_id: int = 0, header_type: int = 0):
        self.data = bytearray(SIZE)
        self.writable = bytearray(SIZE)       # per-byte mask of guest-writable bits
        self.bars: dict[int, Bar] = {}
        self._bar_registers: dict[int, tuple[int, int]] = {}   # register index → (bar index, 0 low / 1 high)
        self._bar_values: dict[int, int] = {}                  # bar index → what the guest last wrote (unmasked)
        self._next_cap = CAPABILITY_START
        self._last_cap = None
        self.capability_writes: dict[int, Callable[[int, bytes], None]] = {}   # cap offset → handler
        self._capability_spans: list[tuple[int, int]] = []
        self._put(VENDOR_ID, 2, vendor_id)
        self._put(DEVICE_ID, 2, device_id)
        self._put(REVISION, 1, revision)
        self._put(PROG_IF, 1, prog_if)
        self._put(SUBCLASS, 1, subclass)
        self._put(CLASS, 1, class_code)
        self._put(HEADER_TYPE, 1, header_type)
        self._put(SUBSYSTEM_VENDOR_ID, 2, subsystem_vendor_id)
        self._put(SUBSYSTEM_ID, 2, subsystem_id)
        self._mask(COMMAND, 2, COMMAND_WRITABLE)
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
        if not 0 <= index <= last <= 5 or size < 16 or size & (size - 1) or addr % size:
            raise PciConfigError(f"bad BAR {index}: size {size:#x} at {addr:#x}")
        if any(i in self._bar_registers for i in (index, last)):
            raise PciConfigError(f"BAR {index} overlaps another")
        self.bars[index] = Bar(index, size, addr, is_64bit, prefetchable)
        self._bar_registers[index] = (index, 0)
        if is_64bit:
            self._bar_registers[index + 1] = (index, 1)
        self._store_bar(index, addr)

    def _store_bar(self, index: int, addr: int) -> None:
        bar = self.bars[index]
        flags = (BAR_MEM64 if bar.is_64bit else 0) | (BAR_PREFETCH if bar.prefetchable else 0)
        self._put(BAR0 + 4 * index, 4, (addr & 0xFFFFFFF0) | flags)
        if bar.is_64bit:
            self._put(BAR0 + 4 * index + 4, 4, addr >> 32)

    def add_capability(self, cap_id: int, body: bytes, on_write: Callable[[int, bytes], None] | None = None,
                       writable: bytes | None = None) -> int:
        """Append a capability (id, next, then body); returns its offset. `writable` is a
        mask over the body's bytes; `on_write(offset_in_cap, new_cap_bytes)` is called after
        the guest writes inside it."""
        offset = self._next_cap
        end = offset + 2 + len(body)
        if end > HEADER_SIZE:
            raise PciConfigError("the capabilities do not fit in the config header")
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
        self._next_cap = (end + 3) & ~3
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
        data[:] = self.data[offset:offset + size]

    def write(self, offset: int, data: memoryview) -> None:
        size = len(data)
        if offset < 0 or offset + size > SIZE or size not in (1, 2, 4):
            return
        register = offset // 4
        if BAR0 // 4 <= register < BAR0 // 4 + 6:
            self._write_bar(register - BAR0 // 4, offset % 4, bytes(data))
            return
        if STATUS <= offset < STATUS + 2 or offset < STATUS < offset + size:
            # Status bits are read-only or write-1-to-clear; plugvm sets none of the latter.
            pass
        changed = False
        for i, byte in enumerate(bytes(data)):
            mask = self.writable[offset + i]
            if mask:
                old = self.data[offset + i]
                new = (old & ~mask) | (byte & mask)
                if new != old:
                    self.data[offset + i] = new
                changed = True
        if changed:
            for start, end in self._capability_spans:
                if start <= offset < end and start in self.capability_writes:
                    self.capability_writes[start](offset - start, bytes(self.data[start:end]))

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
        mask = (~(bar.size - 1)) & (0xFFFFFFFFFFFFFFFF if bar.is_64bit else 0xFFFFFFFF)
        if half == 0:
            low = (value & mask & 0xFFFFFFF0) | (self.get(reg_offset, 4) & 0xF)
            self._put(reg_offset, 4, low)
        else:
            self._put(reg_offset, 4, value & (mask >> 32))
        low = self.get(BAR0 + 4 * index, 4) & 0xFFFFFFF0
        high = self.get(BAR0 + 4 * index + 4, 4) if bar.is_64bit else 0
        bar.addr = (high << 32) | low
