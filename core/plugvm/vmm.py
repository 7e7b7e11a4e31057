"""The VMM: boots a VmConfig, and boots it again after each guest reset, until the
guest powers off (exit status 0) or fails (VmmError)."""

from __future__ import annotations

import signal

import structlog

from plugvm import plugins
from plugvm.errors import PlugvmError
from plugvm.kvm import Kvm
from plugvm.machine import Machine
from plugvm.serial_port import SerialBackend
from plugvm.vcpu_thread import KICK_SIGNAL

log = structlog.get_logger(__name__)


class VmmError(PlugvmError, RuntimeError):
    """The guest could not run on (or stopped with an error)."""


class Vmm:
    def __init__(self, config, registry=None):
        self.config = config
        self.registry = registry if registry is not None else plugins.load()
        self.boots = 0

    def run(self) -> int:
        """Run until the guest powers off; returns 0. Must be called in the main thread."""
        # The kick signal only needs to interrupt KVM_RUN; Python's handler is a no-op.
        signal.signal(KICK_SIGNAL, lambda signum, frame: None)
        serial = SerialBackend(self.config.serial.mode, getattr(self.config.serial, "file", None))
        kvm = Kvm()
        try:
            supported = kvm.supported_cpuid()
            while True:
                machine = Machine(kvm, self.config, serial, supported, self.registry)
                self.boots += 1
                log.info("booting", boot=self.boots, vcpus=self.config.cpus.boot_vcpus)
                try:
                    outcome = machine.run()
                finally:
                    machine.close()
                if outcome.kind == "reset":
                    log.info("guest reset; rebuilding the VM", reason=outcome.message or "reset")
                    continue
                if outcome.kind == "poweroff":
                    log.info("guest powered off")
                    return 0
                raise VmmError(outcome.message or "the VM stopped")
        finally:
            serial.close()
            kvm.close()
