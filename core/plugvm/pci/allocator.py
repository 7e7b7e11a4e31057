"""Guest-physical address windows handed out in aligned pieces (BARs), and taken back."""

from __future__ import annotations

import threading

from plugvm.errors import PlugvmError


class AllocationError(PlugvmError, RuntimeError):
    """The window has no aligned free range of the size asked for."""


class AddressAllocator:
    def __init__(self, base: int, size: int):
        self.base, self.size = base, size
        self._used: dict[int, int] = {}          # start → length
        self._lock = threading.Lock()

    def allocate(self, size: int, align: int, *, at: int | None = None) -> int:
        if size <= 0 or align <= 0 or align & (align - 1):
            raise AllocationError(f"bad request: {size:#x} bytes aligned to {align:#x}")
        with self._lock:
            spans = sorted(self._used.items())
            if at is not None:
                if at % align or at < self.base or at + size > self.base + self.size or \
                        any(s < at + size and at < s + n for s, n in spans):
                    raise AllocationError(f"[{at:#x}, +{size:#x}) is not free in this window")
                self._used[at] = size
                return at
            candidate = (self.base + align - 1) // align * align
            for start, length in spans:
                if candidate + size <= start:
                    break
                candidate = max(candidate, (start + length + align - 1) // align * align)
            if candidate + size > self.base + self.size:
                raise AllocationError(f"no {size:#x} bytes aligned to {align:#x} free in "
                                      f"[{self.base:#x}, +{self.size:#x})")
            self._used[candidate] = size
            return candidate

    def free(self, addr: int) -> None:
        with self._lock:
            self._used.pop(addr, None)
