"""The ACPI Generic Event Device's register, as cloud-hypervisor's AcpiGedDevice
(devices/src/acpi.rs; shared/reference/cloud-hypervisor-notes.md §3a).

One byte of MMIO. The VMM ORs notification flags into it and pulses the GED's
interrupt; the guest's _EVT handler (\\_SB_.GED_._EVT → \\_SB_.GEC_.ESCN, see
acpi/ged_aml.py) reads the byte, which returns the pending flags and clears them,
and then runs the scan method of each component whose bit was set.
"""

from __future__ import annotations

import threading
from typing import Callable

from plugvm.errors import PlugvmError
from plugvm.logs import get_logger

log = get_logger(__name__)

GED_SIZE = 1       # GED_DEVICE_ACPI_SIZE

# AcpiNotificationFlags (devices/src/lib.rs): the bits of the register.
CPU_DEVICES_CHANGED = 0x1       # → \_SB_.CPUS.CSCN
MEMORY_DEVICES_CHANGED = 0x2    # → \_SB_.MHPC.MSCN
PCI_DEVICES_CHANGED = 0x4       # → \_SB_.PHPR.PSCN
POWER_BUTTON_CHANGED = 0x8      # → Notify (\_SB_.PWRB, 0x80)
ALL_FLAGS = CPU_DEVICES_CHANGED | MEMORY_DEVICES_CHANGED | PCI_DEVICES_CHANGED | POWER_BUTTON_CHANGED


class GedError(PlugvmError, ValueError):
    """notify() was given flags the register does not have."""


class Ged:
    """The GED notification register. raise_irq pulses the GED's interrupt line
    (edge-triggered, active-high: the _CRS that ged_aml() writes says so).
    notify() may be called from any thread (the API's); read() from vCPU threads."""

    def __init__(self, raise_irq: Callable[[], None]):
        self._raise_irq = raise_irq
        self._pending = 0
        self._lock = threading.Lock()

    def notify(self, flags: int) -> None:
        """OR flags (CPU_DEVICES_CHANGED, ...) into the register and interrupt the guest.
        Flags already pending stay pending: the guest sees them all on its next read."""
        if isinstance(flags, bool) or not isinstance(flags, int) or flags & ~ALL_FLAGS or not flags:
            raise GedError(f"GED notify: flags {flags!r} are not a non-empty combination of {ALL_FLAGS:#x}")
        with self._lock:
            self._pending |= flags
        log.debug("ged notify", flags=flags)
        # After the bits are set, so the handler the edge starts sees them. Outside the
        # lock: a vCPU reading the register must not wait for the ioctl.
        self._raise_irq()

    @property
    def pending(self) -> int:
        """The flags the guest has not read yet (for tests and logs; does not clear)."""
        return self._pending

    def read(self, offset: int, data: memoryview) -> None:
        """A 1-byte read at offset 0 returns the pending flags and clears them; any other
        access reads zeros and clears nothing (cloud-hypervisor leaves such reads alone)."""
        if offset != 0 or len(data) != 1:
            data[:] = bytes(len(data))
            return
        with self._lock:
            data[0], self._pending = self._pending, 0

    def write(self, offset: int, data: memoryview) -> None:
        """The register is read-only; writes are ignored."""
