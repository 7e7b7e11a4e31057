"""hotplug_method=acpi: DIMMs hot-added through the ACPI memory hotplug controller, as
cloud-hypervisor does (vmm/src/memory_manager.rs; shared/reference/cloud-hypervisor-notes.md
§3c). Grows live in 128 MiB multiples, at most 8 times a boot, inside the window after
boot RAM; a shrink is recorded in the config and taken at the next boot."""

from __future__ import annotations

import threading
from dataclasses import replace

from plugvm.errors import PlugvmError
from plugvm.logs import get_logger
from plugvm.memory_hotplug import (MEMORY_BLOCK, MemoryHotplug, MemoryHotplugEnv, MemoryHotplugError,
                                   MemoryHotplugMethod, ResizeRefused, Resized, window_start)

from plugvm_acpi_mem.aml import memory_hotplug_aml
from plugvm_acpi_mem.registers import REGISTERS_SIZE, SLOTS, MemoryHotplugRegisters

log = get_logger(__name__)


class AcpiMemoryMethod(MemoryHotplugMethod):
    name = "acpi"
    registers_size = REGISTERS_SIZE

    def validate(self, memory_config, where) -> None:
        if memory_config.hotplugged_size is not None:
            raise where.error(f"hotplugged_size is only valid with virtio-mem, not with hotplug_method {self.name}")

    def attach(self, env: MemoryHotplugEnv) -> AcpiMemoryHotplug:
        return AcpiMemoryHotplug(env)


class AcpiMemoryHotplug(MemoryHotplug):
    """One boot's DIMMs. resize() runs on an API thread, one at a time (the VMM's lock);
    the registers are read by vCPU threads."""

    ged_scan = True

    def __init__(self, env: MemoryHotplugEnv):
        self.env = env
        self.registers = MemoryHotplugRegisters()
        self.dimms: list = []           # the plugvm.memory.Region of each hot-add, by slot
        self._lock = threading.Lock()

    def aml(self) -> list:
        return memory_hotplug_aml(self.env.registers_addr)

    def actual_size(self) -> int:
        with self._lock:
            return self.env.config.size + sum(r.size for r in self.dimms)

    def _plan(self, desired: int) -> tuple[int, int] | None:
        """(base, size) of the DIMM that growing to `desired` adds, None for no DIMM
        (a shrink or no change); ResizeRefused if it cannot be added."""
        actual = self.actual_size()
        if desired <= actual:
            return None
        growth = desired - actual
        if growth % MEMORY_BLOCK:
            raise ResizeRefused(f"desired_ram={desired}: growing by {growth} bytes is not a multiple of 128 MiB "
                                f"({MEMORY_BLOCK} bytes), the ACPI memory hotplug unit")
        if len(self.dimms) >= SLOTS:
            raise ResizeRefused(f"desired_ram={desired}: all {SLOTS} memory hotplug slots of this boot are used; "
                                f"more memory can be added after a reboot")
        window = self.env.window
        base = max(window_start(self.env.memory.end), window.start)
        if base + growth > window.end:
            room = self.env.config.size + window.size
            raise ResizeRefused(f"desired_ram={desired} is past the memory hotplug window: at most {room} bytes "
                                f"(size + hotplug_size) this boot")
        return base, growth

    def check_resize(self, desired: int) -> None:
        self._plan(desired)

    def resize(self, desired: int) -> Resized:
        plan = self._plan(desired)
        config = replace(self.env.config, size=desired)
        if plan is None:
            done = threading.Event()
            done.set()
            if desired < self.actual_size():
                log.info("memory shrink recorded for the next boot (ACPI memory is not unplugged live)",
                         desired=desired, actual=self.actual_size())
            return Resized(config, done)
        base, size = plan
        try:
            region = self.env.add_region(base, size)
        except PlugvmError as e:
            raise MemoryHotplugError(f"desired_ram={desired}: the host could not add {size} bytes of RAM: {e}") from e
        except OSError as e:
            raise MemoryHotplugError(f"desired_ram={desired}: the host could not add {size} bytes of RAM: "
                                     f"{e.strerror or e}") from e
        with self._lock:
            slot = len(self.dimms)
            self.dimms.append(region)
        taken = self.registers.insert(slot, base, size)
        self.env.notify_guest()
        log.info("DIMM hot-added", slot=slot, base=hex(base), size=size)
        return Resized(config, taken)
