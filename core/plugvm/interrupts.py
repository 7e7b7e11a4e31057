"""KVM's GSI routing table as the machine uses it: the legacy ISA routes, plus one MSI
route per MSI-X vector in use, each vector raised through an irqfd.

KVM_SET_GSI_ROUTING replaces the whole table, so every change rewrites it from here,
the one place that knows all routes.
"""

from __future__ import annotations

import os
import threading

from plugvm.errors import PlugvmError

FIRST_MSI_GSI = 24          # after the IOAPIC's 24 pins
MAX_GSI = 1024              # KVM_MAX_IRQ_ROUTES is 4096; a VM here needs far fewer


class InterruptError(PlugvmError, RuntimeError):
    """No GSI left for another MSI vector."""


class MsiVector:
    """One MSI-X vector: an eventfd bound to a GSI whose route holds the vector's
    current message. signal() raises it without leaving the calling thread."""

    def __init__(self, router: InterruptRouter, gsi: int):
        self.router = router
        self.gsi = gsi
        self.eventfd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self.routed = False
        self._bound = False

    def signal(self) -> None:
        if self.routed:
            os.eventfd_write(self.eventfd, 1)


class InterruptRouter:
    def __init__(self, vm, legacy_routes: list[tuple]):
        self.vm = vm
        self._legacy = list(legacy_routes)
        self._msi: dict[int, tuple[int, int]] = {}       # gsi → (address, data)
        self._vectors: dict[int, MsiVector] = {}
        self._lock = threading.Lock()
        self._commit()

    def allocate(self) -> MsiVector:
        with self._lock:
            gsi = next((g for g in range(FIRST_MSI_GSI, MAX_GSI) if g not in self._vectors), None)
            if gsi is None:
                raise InterruptError(f"all {MAX_GSI - FIRST_MSI_GSI} MSI GSIs are in use")
            vector = self._vectors[gsi] = MsiVector(self, gsi)
            return vector

    def route(self, vector: MsiVector, address: int, data: int) -> None:
        """Point the vector at an MSI message (a guest-programmed, unmasked MSI-X entry)."""
        with self._lock:
            self._msi[vector.gsi] = (address, data)
            self._commit()
            if not vector._bound:
                self.vm.irqfd(vector.eventfd, vector.gsi)
                vector._bound = True
            vector.routed = True

    def unroute(self, vector: MsiVector) -> None:
        """The entry is masked or MSI-X is off: the vector raises nothing."""
        with self._lock:
            vector.routed = False
            if self._msi.pop(vector.gsi, None) is not None:
                self._commit()

    def release(self, vector: MsiVector) -> None:
        with self._lock:
            vector.routed = False
            if vector._bound:
                self.vm.irqfd(vector.eventfd, vector.gsi, deassign=True)
            self._msi.pop(vector.gsi, None)
            self._vectors.pop(vector.gsi, None)
            os.close(vector.eventfd)
            self._commit()

    def _commit(self) -> None:
        self.vm.set_gsi_routing(self._legacy + [(gsi, "msi", message) for gsi, message in sorted(self._msi.items())])
