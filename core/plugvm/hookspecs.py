"""The hooks a plugvm plugin implements (pluggy, project name "plugvm").

A plugin is a module named by an entry point in the `plugvm` group of its
distribution, e.g. in its pyproject.toml:

    [project.entry-points.plugvm]
    disk = "plugvm_virtio_blk"

plugvm loads every such module at start-up (plugvm.plugins.load()) and calls
its hook implementations, marked with plugvm.hookspecs.hookimpl. The core's
own built-in devices (virtio-rng) are plugins of the same kind.
"""

from __future__ import annotations

import pluggy

PROJECT = "plugvm"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def plugvm_device_types() -> list:
    """The device types this plugin provides, as a list of plugvm.plugins.DeviceType.

    Called once, by plugvm.plugins.load() at start-up, before the command line is
    parsed: each type's `cli_option` becomes a plugvm option, its `api_verb` an
    endpoint of the REST API, and its `config_key` a field of the VM config's JSON.
    Two types claiming the same name, option, verb or key stop plugvm with an error
    naming both distributions. Must not start threads or open files: building
    devices is the job of each type's `create`, called when a VM boots.
    """


@hookspec
def plugvm_memory_hotplug_methods() -> list:
    """The memory-hotplug methods this plugin provides, as a list of
    plugvm.memory_hotplug.MemoryHotplugMethod (the interface, and when the core calls
    each of its parts, is documented there).

    Called once, by plugvm.plugins.load() at start-up, beside plugvm_device_types():
    each method's `name` becomes a value of `--memory hotplug_method=` and of the JSON
    memory config's `hotplug_method` (spelt as cloud-hypervisor's serde does: "acpi" is
    "Acpi", "virtio-mem" "VirtioMem"), and vm.resize's desired_ram goes to the method the
    VM was booted with. Two methods with the same name stop plugvm with an error naming
    both distributions. Must not start threads or open files.
    """


@hookspec
def plugvm_memory_added(region, devices: list) -> None:
    """Guest RAM gained `region` (a plugvm.memory.Region: guest_addr, size, fd, offset,
    mapping) while the VM runs, and `devices` are the VM's device objects (each made by
    its type's create()).

    Called by the core on the thread serving vm.resize, when a memory-hotplug method
    adds a region: after the region is mapped and registered with KVM, before the
    method tells the guest (the GED, a virtio config change). A device whose backend
    reaches guest memory on its own (a vhost-user backend mapping the memfds) passes
    the region on here, so that the guest cannot give it a buffer there first; a
    plugin acts only on its own devices. Must not raise: a device that cannot pass the
    region on marks itself broken (DEVICE_NEEDS_RESET) instead. Regions are never taken
    away while a VM runs: ACPI memory shrinks at the next boot, and virtio-mem keeps its
    whole region mapped, giving unplugged blocks back to the host without unmapping
    them; a reboot builds new devices that see the new RAM from the start. The return
    value is ignored.
    """
