"""The hooks a plugvm plugin implements (pluggy, project name "plugvm"): the contract
between the core and its plugins. docs/plugins.md is the guide to writing one; a test
(tests/unit/test_plugin_docs.py) keeps it and this file in step.

A plugin is a module named by an entry point in the `plugvm` group of its
distribution, e.g. in its pyproject.toml:

    [project.entry-points.plugvm]
    disk = "plugvm_virtio_blk"

plugvm loads every such module at start-up (plugvm.plugins.load()), except those whose
entry-point names $PLUGVM_DISABLE_PLUGINS lists (comma-separated), and calls its hook
implementations: functions named as the specs below, marked with
plugvm.hookspecs.hookimpl (a `plugvm_`-named function counts as one even unmarked, as
pytest does with `pytest_`). An implementation may take fewer arguments than its spec,
never others; one whose name matches no spec (a typo) stops plugvm at load with a
PluginError naming the plugin and the hook. The core's own built-in devices (the
console, virtio-rng) and the event monitor are plugins of the same kind.

Two sorts of hook:
- *providers* (plugvm_device_types, plugvm_memory_hotplug_methods), called once at load;
  each returns a list, and the core gathers every plugin's (none is firstresult);
- *notifications* (plugvm_memory_added and the lifecycle hooks below), called as the VM
  lives through Registry.notify(), which calls every implementation and logs, naming its
  plugin, one that raises. Their return values are ignored.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from plugvm.config.vm import VmConfig
    from plugvm.memory import Region
    from plugvm.plugins import DeviceType

PROJECT = "plugvm"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def plugvm_device_types() -> list[DeviceType]:
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
def plugvm_memory_added(region: Region, devices: list) -> None:
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


# --- lifecycle notifications -------------------------------------------------------------------
#
# What the core tells every plugin as the VM lives: an observer (the event monitor,
# plugvm.builtin.event_monitor, is one) implements those it wants. All are called through
# Registry.notify(): each implementation on its own, so that one that raises is logged,
# naming its plugin, and the others are still called; none may block for long, because
# the caller holds the VMM's lock (the API waits). The return values are ignored. The
# VM config passed is a plugvm.config.vm.VmConfig (read it; it is frozen).


@hookspec
def plugvm_vm_booting(vm_config: VmConfig, boot: int) -> None:
    """A VM is about to be built from `vm_config` (boot 1 is the first boot of this VMM,
    each guest reboot adds one).

    Called by the VMM on the thread that boots it (the main thread for a config given on
    the command line, an API thread for vm.boot, the main thread after a guest reset),
    before any device is created. Must not raise (it is logged and ignored).
    """


@hookspec
def plugvm_vm_booted(vm_config: VmConfig, boot: int) -> None:
    """The VM of `vm_config` was built and its vCPUs started (the guest now runs).

    Called by the VMM right after plugvm_vm_booting()'s boot started, on the same thread.
    A boot that failed calls plugvm_vm_shutdown(reason="failed") instead.
    """


@hookspec
def plugvm_vm_rebooting(vm_config: VmConfig, reason: str) -> None:
    """The VM is about to be torn down and booted again: `reason` is "reset" (the guest
    reset itself) or "api" (vm.reboot).

    Called by the VMM before the old boot's devices are closed; plugvm_vm_booting() and
    plugvm_vm_booted() of the new boot follow, then plugvm_vm_rebooted().
    """


@hookspec
def plugvm_vm_rebooted(vm_config: VmConfig, boot: int) -> None:
    """The VM runs again after a reboot, from the (possibly resized, hot-plugged) current
    config. Called by the VMM after the new boot's plugvm_vm_booted()."""


@hookspec
def plugvm_vm_shutdown(vm_config: VmConfig, reason: str) -> None:
    """The VM stopped running: `reason` is "poweroff" (the guest powered off), "api"
    (vm.shutdown, vm.delete or vmm.shutdown), "exit" (the VMM was told to end: a signal, or
    its main loop stopped) or "failed" (the guest stopped with an error, or a boot failed).

    Called by the VMM once per boot that ran, after its devices were closed, on the
    thread that stopped it. A device a plugin made is closed by then.
    """


@hookspec
def plugvm_device_added(device_id: str, bdf: str, device_type: DeviceType, device_config, hotplug: bool) -> None:
    """A device is in its PCI slot: `device_id` (its id, given or "_disk0"-style), `bdf`
    ("0000:00:05.0"), `device_type` (its plugvm.plugins.DeviceType) and `device_config`.
    `hotplug` is True for one added to a running guest (the guest is told next), False
    for one built at boot.

    Called by the device manager after the device is built and attached, on the thread
    adding it (the booting thread, or the API thread serving vm.add-*), while the VMM's
    lock is held: must not call back into the VMM's API.
    """


@hookspec
def plugvm_device_removed(device_id: str, bdf: str, device_type: DeviceType) -> None:
    """A device left the running VM: the guest ejected it after vm.remove-device, and
    everything it held was released (so its id and slot can be reused).

    Called by the device manager on the vCPU thread that ran the guest's eject: must
    return quickly (the guest waits on it) and not call back into the VMM. Devices closed
    because the whole VM stops are not "removed": plugvm_vm_shutdown() says so.
    """


@hookspec
def plugvm_memory_removed(region: Region) -> None:
    """A region that plugvm_memory_added() announced leaves the VM's address space: it
    is unmapped right after this call. Today that happens only when its boot ends (a
    reboot or a shutdown; an ACPI shrink takes effect by the next boot not adding the
    region again), after the boot's devices were closed.

    Called by the machine on the thread tearing the boot down. Must not raise.
    """


@hookspec
def plugvm_vm_resizing(desired_vcpus: int | None, desired_ram: int | None) -> None:
    """vm.resize was asked of a running VM, and both of its parts were checked and can be
    applied (None: that part is not changed). Called by the VMM on the API thread, before
    either part is applied."""


@hookspec
def plugvm_vm_resized(vm_config: VmConfig, desired_vcpus: int | None, desired_ram: int | None) -> None:
    """A running VM's resize was applied: the hotplug registers are set and the guest was
    told; `vm_config` is the config with the new boot_vcpus and memory. The guest may
    still be onlining what it was given (a `Prefer: wait` request waits for that).
    Called by the VMM on the API thread, after plugvm_vm_resizing()."""
