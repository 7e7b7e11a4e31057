"""The PCI hotplug controller's registers, as cloud-hypervisor's DeviceManager serves them
(vmm/src/device_manager.rs; shared/reference/cloud-hypervisor-notes.md §3e). The AML
that drives them is acpi/pci_aml.py's PHPR, PCNT and _EJ0.

Four DWords, 4-byte accesses only, all about the segment PSEG selects:

    0x0 PCIU  read: the slots added since the last read (cleared by the read)
    0x4 PCID  read: the slots to be removed (cleared by the read)
    0x8 B0EJ  write: the slots the guest has let go of; each set bit is one eject
    0xC PSEG  read/write: the selected segment (writes out of range are ignored)

The VMM announces with added()/removing() and then raises the GED's PCI bit; the
guest's PCNT reads PCIU and PCID and notifies each slot, and its _EJ0 writes B0EJ.
What an eject means is the eject callback's business (device_manager.py), which must
tolerate any bitmap a hostile guest writes: empty slots, slots never announced.
"""

from __future__ import annotations

import threading
from typing import Callable

from plugvm.logs import get_logger
from plugvm.pci.segment import SLOTS

log = get_logger(__name__)

REGISTERS_SIZE = 0x10             # DEVICE_MANAGER_ACPI_SIZE
PCIU, PCID, B0EJ, PSEG = 0x0, 0x4, 0x8, 0xC


class PciHotplugController:
    """The registers of `segments` segments (0..segments-1). eject(segment, slot) is
    called on the writing vCPU's thread, once per bit set in a B0EJ write, lowest first."""

    def __init__(self, segments: int, eject: Callable[[int, int], None]):
        self._up = [0] * segments
        self._down = [0] * segments
        self._selected = 0
        self._eject = eject
        self._lock = threading.Lock()

    def added(self, segment: int, slot: int) -> None:
        """Mark slot as added, for the guest's next scan (PCIU)."""
        with self._lock:
            self._up[segment] |= 1 << slot

    def removing(self, segment: int, slot: int) -> None:
        """Mark slot as to be removed, for the guest's next scan (PCID)."""
        with self._lock:
            self._down[segment] |= 1 << slot

    def pending(self, segment: int) -> tuple[int, int]:
        """(PCIU, PCID) not yet read by the guest (for tests and logs; clears nothing)."""
        return self._up[segment], self._down[segment]

    def read(self, offset: int, data: memoryview) -> None:
        if len(data) != 4:
            data[:] = bytes(len(data))
            return
        value = 0
        with self._lock:
            segment = self._selected
            if offset == PCIU:
                value, self._up[segment] = self._up[segment], 0
            elif offset == PCID:
                value, self._down[segment] = self._down[segment], 0
            elif offset == PSEG:
                value = segment
        data[:] = value.to_bytes(4, "little")

    def write(self, offset: int, data: memoryview) -> None:
        if len(data) != 4:
            return
        value = int.from_bytes(data, "little")
        if offset == PSEG:
            with self._lock:
                if value < len(self._up):
                    self._selected = value
        elif offset == B0EJ:
            with self._lock:
                segment = self._selected
            # Outside the lock: an eject tears a device down, and may announce nothing
            # here, but takes its time.
            for slot in range(SLOTS):
                if value & (1 << slot):
                    self._eject(segment, slot)
