"""MSI-X (PCI 3.0 §6.8.2): the capability, the vector table and the pending-bit array.

API:
    CAP_ID = 0x11; ENTRY_SIZE = 16
    MsixEntry(address: int, data: int)             frozen dataclass: one vector's message
    Msix(num_vectors: int, *, table_bar: int, table_offset: int, pba_bar: int, pba_offset: int,
         on_change: Callable[[int, MsixEntry | None], None] = <no-op>,
         on_pending: Callable[[int], None] = <no-op>)
        .capability: bytes                         the capability body (message control,
                                                   table and PBA BIR/offset), 10 bytes
        .attach(config: PciConfigSpace) -> int     adds the capability; returns its offset.
                                                   Guest writes to message control
                                                   (enable bit 15, function mask bit 14)
                                                   then reach this object.
        .table_read(offset, data) / .table_write(offset, data)   offsets from the table start
        .pba_read(offset, data) / .pba_write(offset, data)       offsets from the PBA start;
                                                   the PBA is read-only
        .table_size, .pba_size                     bytes, for the owner's BAR layout
        .signal(vector) -> bool                    True: inject now. False: masked (vector
                                                   or function), disabled, or out of range;
                                                   the pending bit is now set (if in range)
        .masked(vector) -> bool
        .enabled, .function_masked                 from message control

Effective routing: on_change(vector, MsixEntry) when MSI-X is enabled, the function
is unmasked, the vector is unmasked and its address/data differ from what was last
reported; on_change(vector, None) when it stops being deliverable. The owner routes
it (KVM GSI routing plus an irqfd). A pending vector that becomes deliverable has
its pending bit cleared and on_pending(vector) called, after on_change.

A vector signalled while MSI-X is disabled is also kept pending: plugvm has no INTx
to fall back to, and delivering at enable loses nothing a driver relies on.

Guest accesses never raise: table accesses must be 4 or 8 bytes, naturally aligned
and inside the table, else reads return zeros and writes are ignored. Callbacks run
with this object's (re-entrant) lock held, so a signal() racing an unmask can not
lose its interrupt; they must not wait on another thread that calls into this Msix.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

from plugvm.errors import PlugvmError

CAP_ID = 0x11
ENTRY_SIZE = 16
MAX_VECTORS = 2048                  # the table size field is 11 bits, N - 1
CONTROL_ENABLE = 1 << 15
CONTROL_FUNCTION_MASK = 1 << 14
VECTOR_MASKED = 1                   # bit 0 of vector control; the other 31 bits are reserved
CAP_WRITABLE = bytes([0x00, 0xC0]) + bytes(8)   # over the body: only enable and function mask


class MsixLayoutError(PlugvmError, ValueError):
    """A device model asked for an impossible MSI-X layout."""


@dataclass(frozen=True)
class MsixEntry:
    address: int
    data: int


def _ignore_change(vector: int, entry: MsixEntry | None) -> None:
    pass


def _ignore_pending(vector: int) -> None:
    pass


class Msix:
    """One function's MSI-X state; the owner maps table_*/pba_* into its BAR."""

    def __init__(self, num_vectors: int, *, table_bar: int, table_offset: int, pba_bar: int, pba_offset: int,
                 on_change: Callable[[int, MsixEntry | None], None] = _ignore_change,
                 on_pending: Callable[[int], None] = _ignore_pending):
        # The BIR is the low 3 bits of the offset dword, so offsets are 8-byte aligned (§6.8.2.4).
        if not 1 <= num_vectors <= MAX_VECTORS or table_offset % 8 or pba_offset % 8 \
                or not 0 <= table_bar <= 5 or not 0 <= pba_bar <= 5:
            raise MsixLayoutError(f"bad MSI-X layout: {num_vectors} vectors, table BAR {table_bar} "
                                  f"at {table_offset:#x}, PBA BAR {pba_bar} at {pba_offset:#x}")
        self.num_vectors = num_vectors
        self.table = bytearray(num_vectors * ENTRY_SIZE)
        for v in range(num_vectors):
            self.table[v * ENTRY_SIZE + 12] = VECTOR_MASKED        # every vector is masked at reset
        self.pending = [False] * num_vectors
        self.enabled = False
        self.function_masked = False
        self._on_change, self._on_pending = on_change, on_pending
        self._effective: list[MsixEntry | None] = [None] * num_vectors
        self._lock = threading.RLock()
        self.capability = struct.pack("<HII", num_vectors - 1, table_offset | table_bar, pba_offset | pba_bar)
        self.table_size = len(self.table)
        self.pba_size = (num_vectors + 63) // 64 * 8               # whole qwords

    def attach(self, config) -> int:
        """Add the capability to a PciConfigSpace; returns its offset."""
        return config.add_capability(CAP_ID, self.capability, on_write=self._control_written, writable=CAP_WRITABLE)

    def _control_written(self, offset_in_cap: int, cap: bytes) -> None:
        control = int.from_bytes(cap[2:4], "little")
        with self._lock:
            self.enabled = bool(control & CONTROL_ENABLE)
            self.function_masked = bool(control & CONTROL_FUNCTION_MASK)
            for vector in range(self.num_vectors):
                self._update(vector)

    def _entry(self, vector: int) -> MsixEntry | None:
        lo, hi, data, control = struct.unpack_from("<IIII", self.table, vector * ENTRY_SIZE)
        if not self.enabled or self.function_masked or control & VECTOR_MASKED:
            return None
        return MsixEntry((hi << 32) | lo, data)

    def _update(self, vector: int) -> None:
        entry = self._entry(vector)
        if entry != self._effective[vector]:
            self._effective[vector] = entry
            self._on_change(vector, entry)
        if entry is not None and self.pending[vector]:
            self.pending[vector] = False
            self._on_pending(vector)

    def masked(self, vector: int) -> bool:
        return not 0 <= vector < self.num_vectors or self._effective[vector] is None

    def signal(self, vector: int) -> bool:
        """True: raise it now. False: it is masked; it is now pending (raised at unmask)."""
        if not 0 <= vector < self.num_vectors:
            return False
        with self._lock:
            if self._effective[vector] is None:
                self.pending[vector] = True
                return False
            return True

    @staticmethod
    def _valid(offset: int, size: int, limit: int) -> bool:
        return size in (4, 8) and offset >= 0 and offset % size == 0 and offset + size <= limit

    def table_read(self, offset: int, data: memoryview) -> None:
        size = len(data)
        if not self._valid(offset, size, len(self.table)):
            data[:] = bytes(size)
            return
        with self._lock:
            data[:] = self.table[offset:offset + size]

    def table_write(self, offset: int, data: memoryview) -> None:
        size = len(data)
        if not self._valid(offset, size, len(self.table)):
            return
        with self._lock:
            self.table[offset:offset + size] = data
            first, last = offset // ENTRY_SIZE, (offset + size - 1) // ENTRY_SIZE
            for vector in range(first, last + 1):
                control = vector * ENTRY_SIZE + 12
                # Reserved vector-control bits read as zero.
                self.table[control:control + 4] = (self.table[control] & VECTOR_MASKED).to_bytes(4, "little")
                self._update(vector)

    def pba_read(self, offset: int, data: memoryview) -> None:
        size = len(data)
        if not self._valid(offset, size, self.pba_size):
            data[:] = bytes(size)
            return
        with self._lock:
            first = offset * 8
            bits = sum(1 << i for i, p in enumerate(self.pending[first:first + size * 8]) if p)
        data[:] = bits.to_bytes(size, "little")

    def pba_write(self, offset: int, data: memoryview) -> None:
        """The PBA is read-only (§6.8.2.10): writes are ignored."""
