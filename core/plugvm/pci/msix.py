"""MSI-X (PCI 3.0 §6.8.2): the capability, the vector table and the pending-bit array.

The owner learns of every change in a vector's effective message through
on_change(vector, MsixEntry | None) — None when the vector is masked, or MSI-X is
off or function-masked — and routes it (KVM GSI routing plus an irqfd). Before
raising a vector it asks signal(vector): False means "masked: now pending"; the
deferred interrupt comes back through on_pending(vector) at unmask.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

CAP_ID = 0x11
ENTRY_SIZE = 16
CONTROL_ENABLE = 1 << 15
CONTROL_FUNCTION_MASK = 1 << 14
VECTOR_MASKED = 1


@dataclass(frozen=True)
class MsixEntry:
    address: int
    data: int


class Msix:
    def __init__(self, num_vectors: int, *, table_bar: int, table_offset: int, pba_bar: int, pba_offset: int,
                 on_change: Callable[[int, MsixEntry | None], None], on_pending: Callable[[int], None]):
        if not 1 <= num_vectors <= 2048 or table_offset % 8 or pba_offset % 8:
            raise ValueError(f"bad MSI-X layout: {num_vectors} vectors, table {table_offset:#x}, pba {pba_offset:#x}")
        self.num_vectors = num_vectors
        self.table = bytearray(num_vectors * ENTRY_SIZE)
        for v in range(num_vectors):
            self.table[v * ENTRY_SIZE + 12] = VECTOR_MASKED        # masked at reset
        self.pending = [False] * num_vectors
        self.enabled = False
        self.function_masked = False
        self._on_change, self._on_pending = on_change, on_pending
        self._effective: list[MsixEntry | None] = [None] * num_vectors
        self._lock = threading.Lock()
        self.capability = struct.pack("<HII", num_vectors - 1, table_offset | table_bar, pba_offset | pba_bar)
        self.pba_size = (num_vectors + 63) // 64 * 8

    def attach(self, config) -> int:
        """Add the capability to a PciConfigSpace; returns its offset."""
        writable = bytes([0x00, 0xC0]) + bytes(8)       # only enable and function mask
        return config.add_capability(CAP_ID, self.capability, on_write=self._control_written, writable=writable)

    def _control_written(self, offset_in_cap: int, cap: bytes) -> None:
        control = int.from_bytes(cap[2:4], "little")
        with self._lock:
            self.enabled = bool(control & CONTROL_ENABLE)
            self.function_masked = bool(control & CONTROL_FUNCTION_MASK)
        self._update_all()

    def _entry(self, vector: int) -> MsixEntry | None:
        base = vector * ENTRY_SIZE
        lo, hi, data, control = struct.unpack_from("<IIII", self.table, base)
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

    def _update_all(self) -> None:
        for vector in range(self.num_vectors):
            self._update(vector)

    def masked(self, vector: int) -> bool:
        return self._effective[vector] is None

    def signal(self, vector: int) -> bool:
        """True: raise it now. False: it is masked; it is now pending (raised at unmask)."""
        if not 0 <= vector < self.num_vectors:
            return False
        if self._effective[vector] is None:
            self.pending[vector] = True
            return False
        return True

    def table_read(self, offset: int, data: memoryview) -> None:
        size = len(data)
        if size in (4, 8) and offset % size == 0 and 0 <= offset and offset + size <= len(self.table):
            data[:] = self.table[offset:offset + size]
        else:
            data[:] = bytes(size)

    def table_write(self, offset: int, data: memoryview) -> None:
        size = len(data)
        if size not in (4, 8) or offset % size or offset < 0 or offset + size > len(self.table):
            return
        self.table[offset:offset + size] = data
        first, last = offset // ENTRY_SIZE, (offset + size - 1) // ENTRY_SIZE
        for vector in range(first, last + 1):
            self._update(vector)

    def pba_read(self, offset: int, data: memoryview) -> None:
        bits = sum(1 << v for v, p in enumerate(self.pending) if p)
        raw = bits.to_bytes(self.pba_size, "little")
        size = len(data)
        data[:] = raw[offset:offset + size].ljust(size, b"\0") if 0 <= offset < self.pba_size else bytes(size)
