"""The CPU hotplug controller's registers, as cloud-hypervisor's AcpiCpuHotplugController
(vmm/src/cpu.rs; shared/reference/cloud-hypervisor-notes.md §3b). The AML that drives
them is acpi/cpu_aml.py's PRES and CPUS.

    0x0 selector  DWord, read/write: the CPU the status byte is about
    0x4 status    byte; read: bit 0 enabled (the vCPU runs), bit 1 inserting, bit 2 removing
                  write: bit 1 acks the insert, bit 2 acks the removal, bit 3 ejects

The VMM marks CPUs with insert()/remove() and raises the GED's CPU bit; the guest's
CSCN selects each CPU, notifies those inserting or removing and acks; Linux then
evaluates _STA of an inserted CPU (a status read after the ack: seen() is set), or
offlines a removed one and runs its _EJ0, which writes EJECT. An eject is honoured only
for a CPU marked for removal and never for CPU 0; anything else a guest writes or reads
is ignored (and logged), never an error.
"""

from __future__ import annotations

import threading
from typing import Callable

from plugvm.logs import get_logger

log = get_logger(__name__)

REGISTERS_SIZE = 0xC              # CPU_MANAGER_ACPI_SIZE
SELECTOR, STATUS = 0x0, 0x4
ENABLED, INSERTING, REMOVING, EJECT = 0x1, 0x2, 0x4, 0x8


class _Cpu:
    __slots__ = ("enabled", "inserting", "removing", "pending", "acked", "seen", "ejected")

    def __init__(self, enabled: bool):
        self.enabled, self.inserting, self.removing, self.acked = enabled, False, False, False
        self.pending = False                # removal asked, not ejected yet (the bit is acked earlier)
        self.seen = threading.Event()       # the guest evaluated _STA after the insert
        self.ejected = threading.Event()    # the guest ejected it after a removal
        if enabled:
            self.seen.set()


class CpuHotplugController:
    """The registers of max_vcpus CPUs, of which the first `enabled` run from boot.
    eject(cpu) is called on the writing vCPU's thread for an honoured EJECT; it stops
    the vCPU, and the controller then shows the CPU disabled."""

    def __init__(self, max_vcpus: int, enabled: int, eject: Callable[[int], None]):
        self._cpus = [_Cpu(i < enabled) for i in range(max_vcpus)]
        self._selected = 0
        self._eject = eject
        self._lock = threading.Lock()

    # --- the VMM's side ------------------------------------------------------------------------

    def insert(self, cpu: int) -> threading.Event:
        """Show `cpu` enabled and inserting, for the guest's next scan; returns the event
        set once the guest has evaluated its _STA."""
        with self._lock:
            state = self._cpus[cpu]
            state.enabled, state.inserting, state.removing, state.acked = True, True, False, False
            state.pending = False
            state.seen.clear()
            state.ejected.clear()
            return state.seen

    def remove(self, cpu: int) -> threading.Event:
        """Mark `cpu` for removal, for the guest's next scan; returns the event set once
        the guest has ejected it."""
        with self._lock:
            state = self._cpus[cpu]
            state.removing = state.pending = True
            state.ejected.clear()
            return state.ejected

    def removing(self) -> list[int]:
        """The CPUs marked for removal that the guest has not ejected yet."""
        with self._lock:
            return [i for i, state in enumerate(self._cpus) if state.pending]

    def enabled(self) -> list[int]:
        with self._lock:
            return [i for i, state in enumerate(self._cpus) if state.enabled]

    # --- the guest's side (vCPU threads) -------------------------------------------------------

    def read(self, offset: int, data: memoryview) -> None:
        value = 0
        with self._lock:
            if offset == SELECTOR and len(data) == 4:
                value = self._selected
            elif offset == STATUS and len(data) == 1 and self._selected < len(self._cpus):
                state = self._cpus[self._selected]
                value = (ENABLED * state.enabled) | (INSERTING * state.inserting) | (REMOVING * state.removing)
                if state.acked and not state.seen.is_set():
                    state.seen.set()        # the first look after the scan's ack: _STA
            else:
                log.debug("cpu hotplug: read ignored", offset=offset, size=len(data))
        data[:] = value.to_bytes(len(data), "little") if len(data) in (1, 2, 4, 8) else bytes(len(data))

    def write(self, offset: int, data: memoryview) -> None:
        value = int.from_bytes(data, "little")
        eject = None
        with self._lock:
            if offset == SELECTOR and len(data) == 4:
                self._selected = value      # out of range: status reads 0, writes do nothing
                return
            if offset != STATUS or len(data) != 1 or self._selected >= len(self._cpus):
                log.warning("cpu hotplug: write ignored", offset=offset, size=len(data), selected=self._selected)
                return
            cpu, state = self._selected, self._cpus[self._selected]
            if value & INSERTING and state.inserting:
                state.inserting, state.acked = False, True
            if value & REMOVING:
                state.removing = False      # the scan notified it; it stays pending until the eject
            if value & EJECT:
                if cpu == 0 or not state.pending or not state.enabled:
                    log.warning("cpu hotplug: eject of a CPU not marked for removal ignored", cpu=cpu)
                else:
                    eject = cpu
        if eject is not None:
            # Outside the lock: stopping a vCPU takes time, and that vCPU may be reading
            # these registers as it goes.
            self._eject(eject)
            with self._lock:
                state = self._cpus[eject]
                state.enabled = state.removing = state.pending = state.inserting = state.acked = False
                state.ejected.set()
