"""Device types from plugins: what each provides, loaded from the `plugvm` entry-point group.

The core names no device type. Everything it knows about one — the option that
configures it, the API verb that hot-adds it, how its config is parsed and how the
device is built — comes from a DeviceType returned by a plugin's
plugvm_device_types() hook (hookspecs.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata

import pluggy

from plugvm import hookspecs
from plugvm.errors import PlugvmError

ENTRY_POINT_GROUP = "plugvm"
# Where cloud-hypervisor's options and values live in plugvm when no installed plugin
# provides them: named in errors only ("install plugvm-virtio-mem"), never used to load.
HOMES = {"--disk": "plugvm-virtio-blk", "--net": "plugvm-virtio-net", "--fs": "plugvm-virtio-fs",
         "--vsock": "plugvm-vsock", "hotplug_method=acpi": "plugvm-acpi-mem",
         "hotplug_method=virtio-mem": "plugvm-virtio-mem"}


def missing(what: str) -> str:
    """The end of an error about an option or value no installed plugin provides."""
    home = HOMES.get(what)
    hint = f"; it comes with the {home} distribution, which is not installed" if home else ""
    return f"no installed plugin provides it{hint} (plugvm --list-plugins shows the installed ones)"


class PluginError(PlugvmError, RuntimeError):
    """A plugin could not be loaded, or two plugins claim the same name, option, verb or key."""


@dataclass(frozen=True, kw_only=True)
class DeviceType:
    """One kind of device, as a plugin declares it.

    parse(text) reads the CLI value (`path=/x,readonly=on`), from_json(body) the JSON
    object of the API and VM config; both return a frozen config (with an `id`
    attribute and a to_json() method) or raise plugvm.config.ConfigError naming the
    option or field. create(config, env) builds the device (a plugvm.virtio.device.
    VirtioDevice for kind "virtio") or raises plugvm.errors.PlugvmError saying why;
    it must release whatever it opened before raising.

    Hotplug needs nothing more: a type with an api_verb is hot-added to a running VM
    through the same create(), called on an API thread while the guest runs, and is
    removable by vm.remove-device unless `removable` is False. The core records a
    hot-added device in the VM config with dataclasses.replace(config, id=...,
    pci_device_id=...), so the config is a dataclass with those fields
    (plugvm.device_config.PciFields has them) and the device comes back at its BDF
    after a reboot.
    """

    name: str                          # "disk"
    kind: str                          # how the core attaches it: "virtio" (a virtio-pci device)
    cli_option: str                    # "--disk"
    config_key: str                    # the VmConfig JSON field: "disks"
    parse: Callable[[str], object]
    from_json: Callable[[object], object]
    create: Callable[[object, object], object]
    multiple: bool = True              # the option repeats and config_key holds a list
    api_verb: str | None = None        # "vm.add-disk", served by the REST API
    id_prefix: str | None = None       # "_disk": default ids _disk0, _disk1, ... from the shared counter
    fixed_id: str | None = None        # "__rng": the one id of a single built-in device
    order: int = 100                   # creation order; cloud-hypervisor's: disks 10, net 20, rng 30, fs 50, ...
    default: Callable[[], object] | None = None   # a config used when the option is not given (rng)
    removable: bool = True             # vm.remove-device may take it out of a running VM (built-ins: no)
    # A built-in device set by a part of VmConfig rather than by `devices` (the virtio-console by
    # VmConfig.console, as in ch's VmConfig): the configs of the devices a VmConfig asks for (none
    # for --console off). Its cli_option and config_key are then the core's own; not parsed here.
    configured_by: Callable[[object], tuple] | None = None
    help: str = ""
    distribution: str = field(default="", compare=False)    # filled in by the registry
    version: str = field(default="", compare=False)


class Registry:
    """The device types of every loaded plugin."""

    def __init__(self):
        self.manager = pluggy.PluginManager(hookspecs.PROJECT)
        self.manager.add_hookspecs(hookspecs)
        self.types: dict[str, DeviceType] = {}
        self.memory_methods: dict[str, object] = {}      # name → plugvm.memory_hotplug.MemoryHotplugMethod
        self.plugins: list[tuple[str, str, str]] = []     # (distribution, version, entry point name)

    def register(self, module, distribution: str = "", version: str = "") -> None:
        """Register one plugin module and its device types; PluginError on a clash."""
        self.manager.register(module, name=f"{distribution}:{getattr(module, '__name__', module)}")
        impl = getattr(module, "plugvm_device_types", None)
        for device_type in (impl() if impl else []):
            self._add(DeviceType(**{**device_type.__dict__, "distribution": distribution, "version": version}))
        methods = getattr(module, "plugvm_memory_hotplug_methods", None)
        for method in (methods() if methods else []):
            old = self.memory_methods.get(method.name)
            if old is not None:
                raise PluginError(f"plugins {old.distribution or '?'} and {distribution or '?'} both provide "
                                  f"the memory hotplug method {method.name!r}")
            method.distribution = distribution
            self.memory_methods[method.name] = method

    def _add(self, new: DeviceType) -> None:
        for old in self.types.values():
            for attribute in ("name", "cli_option", "config_key", "api_verb"):
                value = getattr(new, attribute)
                if value is not None and value == getattr(old, attribute):
                    raise PluginError(f"plugins {old.distribution or '?'} and {new.distribution or '?'} both provide "
                                      f"the {attribute.replace('_', ' ')} {value!r}")
        self.types[new.name] = new

    def ordered(self) -> list[DeviceType]:
        return sorted(self.types.values(), key=lambda t: (t.order, t.name))

    def by_option(self, option: str) -> DeviceType | None:
        return next((t for t in self.types.values() if t.cli_option == option), None)

    def by_verb(self, verb: str) -> DeviceType | None:
        return next((t for t in self.types.values() if t.api_verb == verb), None)

    def by_key(self, key: str) -> DeviceType | None:
        return next((t for t in self.types.values() if t.config_key == key), None)


def load() -> Registry:
    """A registry of every plugin installed in this Python environment."""
    registry = Registry()
    for entry_point in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        distribution = entry_point.dist.name if entry_point.dist else ""
        version = entry_point.dist.version if entry_point.dist else ""
        try:
            module = entry_point.load()
        except Exception as e:
            raise PluginError(f"plugin {entry_point.name!r} ({distribution}): cannot be loaded: {e}") from e
        registry.register(module, distribution, version)
        registry.plugins.append((distribution, version, entry_point.name))
    return registry


def describe(registry: Registry) -> str:
    """The text of `plugvm --list-plugins`."""
    lines = []
    for t in registry.ordered():
        provides = [t.cli_option, f"config {t.config_key}"] + ([f"API {t.api_verb}"] if t.api_verb else [])
        lines.append(f"{t.name:10} {t.distribution} {t.version}: {', '.join(provides)}"
                     + (f" - {t.help}" if t.help else ""))
    versions = {d: v for d, v, _ in registry.plugins}
    for name, method in sorted(registry.memory_methods.items()):
        lines.append(f"{'memory':10} {method.distribution} {versions.get(method.distribution, '')}: "
                     f"--memory hotplug_method={name}, API vm.resize desired_ram")
    return "\n".join(lines)
