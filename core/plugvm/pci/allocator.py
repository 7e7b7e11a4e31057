"""Guest-physical address windows handed out in aligned pieces (BARs), and taken back.

API:
    AllocationError(PlugvmError, RuntimeError)
    AddressAllocator(base: int, size: int)
        .base, .size                                   the window [base, base + size)
        .allocate(size: int, align: int, *, at: int | None = None) -> int
            first fit at the lowest aligned address; `align` a power of two; `at` asks
            for that exact (aligned, free) address. AllocationError when it cannot.
        .free(addr: int) -> None                       addr as returned by allocate();
                                                       unknown addresses are ignored
        .allocations() -> list[tuple[int, int]]        (start, size), sorted

BAR bookkeeping lives here, one allocator per window (PciSegment.mem32/.mem64),
because hotplug both adds and frees BARs. Thread-safe.
"""

from __future__ import annotations

import bisect
import threading

from plugvm.errors import PlugvmError


class AllocationError(PlugvmError, RuntimeError):
    """The window has no aligned free range of the size asked for, or the request is malformed."""


class AddressAllocator:
    """First-fit allocator over one window of guest-physical addresses."""

    def __init__(self, base: int, size: int):
        if base < 0 or size <= 0:
            raise AllocationError(f"bad window: base {base:#x}, size {size:#x}")
        self.base, self.size = base, size
        self._starts: list[int] = []          # sorted starts of used ranges
        self._sizes: dict[int, int] = {}      # start → length
        self._lock = threading.Lock()

    @property
    def end(self) -> int:
        return self.base + self.size

    def _is_free(self, start: int, size: int) -> bool:
        if start < self.base or start + size > self.end:
            return False
        i = bisect.bisect_right(self._starts, start)
        if i > 0:
            prev = self._starts[i - 1]
            if prev + self._sizes[prev] > start:
                return False
        return i == len(self._starts) or self._starts[i] >= start + size

    def allocate(self, size: int, align: int, *, at: int | None = None) -> int:
        if size <= 0 or align <= 0 or align & (align - 1):
            raise AllocationError(f"bad request: {size:#x} bytes aligned to {align:#x}")
        with self._lock:
            if at is not None:
                if at % align or not self._is_free(at, size):
                    raise AllocationError(f"[{at:#x}, +{size:#x}) is not free and {align:#x}-aligned "
                                          f"in [{self.base:#x}, {self.end:#x})")
                candidate = at
            else:
                candidate = -(-self.base // align) * align
                # Walk the used ranges in order; each one either lies after the gap that fits
                # (done) or pushes the candidate past its end.
                for start in self._starts:
                    if candidate + size <= start:
                        break
                    candidate = max(candidate, -(-(start + self._sizes[start]) // align) * align)
                if candidate + size > self.end:
                    raise AllocationError(f"no {size:#x} bytes aligned to {align:#x} free in "
                                          f"[{self.base:#x}, {self.end:#x})")
            bisect.insort(self._starts, candidate)
            self._sizes[candidate] = size
            return candidate

    def free(self, addr: int) -> None:
        # Ignoring unknown addresses lets a cleanup path free what it may not have got.
        with self._lock:
            if self._sizes.pop(addr, None) is not None:
                self._starts.remove(addr)

    def allocations(self) -> list[tuple[int, int]]:
        with self._lock:
            return [(start, self._sizes[start]) for start in self._starts]
