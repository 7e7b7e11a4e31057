"""Memory-hotplug methods: the interface behind `--memory hotplug_method=NAME` and the
`desired_ram` of vm.resize.

The core names no method. A plugin returns MemoryHotplugMethod objects from its
plugvm_memory_hotplug_methods() hook (hookspecs.py); `hotplug_method=NAME` picks the
one whose `name` is NAME. What happens with them, and when:

    parsing --memory / vm.create  method.validate(memory_config, where)
    each boot, laying out RAM     method.reserve(boot_ram_end, memory_config) -> Window
    each boot, building devices   method.attach(MemoryHotplugEnv) -> MemoryHotplug
                                  then its registers (on the platform area), aml()
                                  (the DSDT) and ged_scan (the GED's memory bit)
    vm.resize with desired_ram    check_resize(desired), then resize(desired) -> Resized
    vm.info                       actual_size()
    the boot ends                 close()

A VM without hotplug_size has no method at all. A reboot builds everything again from
the config that resize() returned, so what a method did live must be written there
(the ACPI method: a larger boot size; virtio-mem: hotplugged_size).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from plugvm import layout
from plugvm.errors import PlugvmError

MEMORY_BLOCK = 128 << 20      # a Linux memory block on x86-64; hotplug windows align to it


class ResizeRefused(PlugvmError, ValueError):
    """A desired_ram the method cannot give (not a multiple it needs, past the window,
    no slot left): nothing was changed. The message names the field."""


class MemoryHotplugError(PlugvmError, RuntimeError):
    """The host failed a resize the method had accepted (no memory, a KVM slot refused);
    the method undid what it had started."""


@dataclass(frozen=True)
class Window:
    """The guest-physical range reserved for RAM added at run time."""

    start: int
    size: int

    @property
    def end(self) -> int:
        return self.start + self.size


def window_start(boot_ram_end: int) -> int:
    """Where RAM added after boot starts, as cloud-hypervisor places it (notes §3c): at
    4 GiB when boot RAM ends below the 32-bit hole, else at boot RAM's end rounded up to
    a Linux memory block (128 MiB)."""
    if boot_ram_end <= layout.MEM_32BIT_RESERVED_START:
        return layout.RAM_64BIT_START
    return -(-boot_ram_end // MEMORY_BLOCK) * MEMORY_BLOCK


@dataclass(frozen=True)
class MemoryHotplugEnv:
    """What the core gives a method for one boot (attach())."""

    memory: object                  # plugvm.memory.GuestMemory: boot RAM, and regions added since
    config: object                  # the VM's plugvm.config.MemoryConfig
    window: Window                  # what reserve() returned
    registers_addr: int | None      # the platform-area page of its registers (registers_size > 0)
    # Map new RAM at (guest_addr, size) with the VM's backing, register it with KVM and
    # tell the device plugins (hookspecs.plugvm_memory_added), in that order, before the
    # method tells the guest. Returns the plugvm.memory.Region; raises
    # plugvm.memory.GuestMemoryAllocationError or plugvm.kvm.KvmError, leaving nothing mapped.
    add_region: Callable[[int, int], object]
    notify_guest: Callable[[], None]        # raise the GED's memory bit (\\_SB_.MHPC.MSCN runs)


@dataclass(frozen=True)
class Resized:
    """What a resize did: `config`, the MemoryConfig the VM config takes (so that a
    reboot gives the guest what it has now, or the smaller size asked for), and `done`,
    set once the guest has taken the change (a `Prefer: wait` waits for it)."""

    config: object
    done: threading.Event = field(default_factory=threading.Event)


class MemoryHotplug:
    """One boot's memory hotplug, as a method's attach() returns it. The defaults are a
    method with no registers and no AML."""

    registers: object | None = None     # a plugvm.bus.BusDevice for the registers_size bytes at registers_addr
    ged_scan: bool = False              # the DSDT has \\_SB_.MHPC.MSCN, which the GED's memory bit runs

    def aml(self) -> list:
        """The method's DSDT fragments (plugvm.acpi.aml objects)."""
        return []

    def actual_size(self) -> int:
        """The RAM the guest has now, boot RAM included: vm.info's memory_actual_size."""
        raise NotImplementedError

    def check_resize(self, desired: int) -> None:
        """Raise ResizeRefused if resize(desired) would be refused; change nothing. The
        core calls it before changing anything of a resize that also changes CPUs."""
        raise NotImplementedError

    def resize(self, desired: int) -> Resized:
        """Make the guest's RAM `desired` bytes, boot RAM included: grow or shrink live,
        or record it for the next boot. Called on an API thread with the VM running
        (or paused), after check_resize(desired) passed. Raises MemoryHotplugError when
        the host fails, having undone its part."""
        raise NotImplementedError

    def close(self) -> None:
        """The boot ends (after the devices closed): release what attach() made."""


class MemoryHotplugMethod:
    """A way of adding RAM to a running guest, as a plugin declares it."""

    name: str = ""                  # the hotplug_method value: "acpi", "virtio-mem"
    registers_size: int = 0         # bytes of MMIO registers it needs on the platform area (0: none)
    distribution: str = ""          # filled in by the registry

    def validate(self, memory_config, where) -> None:
        """Refuse the --memory options this method cannot take, raising where.error(...)
        (a plugvm.config.ConfigError naming the option); called when the command line or
        a vm.create body names this method, hotplug_size or not."""

    def reserve(self, boot_ram_end: int, memory_config) -> Window:
        """The guest-physical window for RAM added at run time, given where boot RAM
        ends; called at each boot of a VM with hotplug_size. The 64-bit PCI window goes
        after it."""
        start = window_start(boot_ram_end)
        return Window(start, -(-memory_config.hotplug_size // MEMORY_BLOCK) * MEMORY_BLOCK)

    def attach(self, env: MemoryHotplugEnv) -> MemoryHotplug:
        """This boot's memory hotplug; called after boot RAM is mapped and before the
        boot devices are built (a method's own device, such as virtio-mem's, finds it in
        DeviceEnv.memory_hotplug)."""
        raise NotImplementedError
