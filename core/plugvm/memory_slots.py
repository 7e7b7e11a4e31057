"""KVM memory slot numbers: given out lowest first and taken back, so that a removed
region's slot is the next one's (cloud-hypervisor's MemorySlotAllocator keeps a free
list for the same reason: hot-added devices that own guest memory come and go).

API:
    SlotsExhaustedError(PlugvmError, RuntimeError)
    MemorySlots(limit: int | None = None)
        .allocate() -> int          the lowest free slot; SlotsExhaustedError past `limit`
        .free(slot: int) -> None    a slot allocate() gave; unknown slots are ignored
        .in_use() -> list[int]      sorted

Thread-safe: boot RAM is mapped on the main thread, hot-added RAM and device ranges on
API threads, and a device's ranges are released on the vCPU thread that ejects it.
"""

from __future__ import annotations

import threading

from plugvm.errors import PlugvmError


class SlotsExhaustedError(PlugvmError, RuntimeError):
    """Every KVM memory slot this VM may use is taken."""


class MemorySlots:
    """The KVM memory slots of one VM (one per boot: a reboot builds a new VM)."""

    def __init__(self, limit: int | None = None):
        self.limit = limit                  # KVM_CAP_NR_MEMSLOTS where the host says it
        self._used: set[int] = set()
        self._lock = threading.Lock()

    def allocate(self) -> int:
        with self._lock:
            slot = next(s for s in range(len(self._used) + 1) if s not in self._used)
            if self.limit is not None and slot >= self.limit:
                raise SlotsExhaustedError(f"all {self.limit} KVM memory slots are in use")
            self._used.add(slot)
            return slot

    def free(self, slot: int) -> None:
        with self._lock:
            self._used.discard(slot)

    def in_use(self) -> list[int]:
        with self._lock:
            return sorted(self._used)
