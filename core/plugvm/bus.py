"""Port-I/O and MMIO buses: address ranges mapped to devices.

A device on a bus implements read(offset, data) — filling the memoryview data,
whose length is the access size — and write(offset, data). Offsets are relative
to the start of the range the device was inserted at.
"""

from __future__ import annotations

import bisect
import threading
from typing import Protocol

from plugvm.errors import PlugvmError


class BusError(PlugvmError, ValueError):
    """A range overlaps one already on the bus, or is empty."""


class BusDevice(Protocol):
    def read(self, offset: int, data: memoryview) -> None: ...

    def write(self, offset: int, data: memoryview) -> None: ...


class Bus:
    """Sorted, non-overlapping ranges; lookups are a bisect, safe from any vCPU thread."""

    def __init__(self, name: str):
        self.name = name
        self._starts: list[int] = []
        self._entries: list[tuple[int, int, BusDevice]] = []   # (start, end, device)
        self._lock = threading.Lock()

    def insert(self, start: int, length: int, device: BusDevice) -> None:
        if length <= 0:
            raise BusError(f"{self.name}: empty range at {start:#x}")
        end = start + length
        with self._lock:
            i = bisect.bisect_right(self._starts, start)
            if (i > 0 and self._entries[i - 1][1] > start) or (i < len(self._entries) and self._entries[i][0] < end):
                raise BusError(f"{self.name}: [{start:#x}, {end:#x}) overlaps a range already on the bus")
            # Copy-on-write, so that lookups need no lock.
            self._starts = self._starts[:i] + [start] + self._starts[i:]
            self._entries = self._entries[:i] + [(start, end, device)] + self._entries[i:]

    def remove(self, start: int) -> None:
        with self._lock:
            i = self._starts.index(start)
            self._starts = self._starts[:i] + self._starts[i + 1:]
            self._entries = self._entries[:i] + self._entries[i + 1:]

    def find(self, addr: int, size: int) -> tuple[BusDevice, int] | None:
        starts, entries = self._starts, self._entries
        i = bisect.bisect_right(starts, addr) - 1
        if i >= 0:
            start, end, device = entries[i]
            if addr + size <= end:
                return device, addr - start
        return None

    def read(self, addr: int, data: memoryview) -> bool:
        """Dispatch a read; False (and data all ones) when nothing is there."""
        found = self.find(addr, len(data))
        if found is None:
            data[:] = b"\xff" * len(data)
            return False
        found[0].read(found[1], data)
        return True

    def write(self, addr: int, data: memoryview) -> bool:
        found = self.find(addr, len(data))
        if found is None:
            return False
        found[0].write(found[1], data)
        return True
