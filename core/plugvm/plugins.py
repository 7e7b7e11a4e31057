"""Device types from plugins: what each provides, loaded from the `plugvm` entry-point group.

The core names no device type. Everything it knows about one — the option that
configures it, the API verb that hot-adds it, how its config is parsed and how the
device is built — comes from a DeviceType returned by a plugin's
plugvm_device_types() hook (hookspecs.py).
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass, field

import pluggy
from plugvm import hookspecs, plugin_index
from plugvm.errors import PlugvmError
from plugvm.logs import get_logger

log = get_logger(__name__)

ENTRY_POINT_GROUP = "plugvm"
# Entry-point names (comma-separated) that load() leaves out, as tox's TOX_DISABLE_PLUGINS.
DISABLE_ENV = "PLUGVM_DISABLE_PLUGINS"
HOOK_PREFIX = "plugvm_"
# Where cloud-hypervisor's options and values live in plugvm when no installed plugin
# provides them: named in errors only ("install plugvm-virtio-mem"), never used to load.
HOMES = {"--disk": "plugvm-virtio-blk", "--net": "plugvm-virtio-net", "--fs": "plugvm-virtio-fs",
         "--vsock": "plugvm-vsock", "--pmem": "plugvm-virtio-pmem", "hotplug_method=acpi": "plugvm-acpi-mem",
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


class _PluginManager(pluggy.PluginManager):
    """pluggy's manager, taking a `plugvm_`-named function as a hook implementation even
    unmarked (as pytest does with `pytest_`): so that a misspelt hook is caught by
    check_pending() instead of silently never called."""

    def parse_hookimpl_opts(self, plugin, name: str):
        opts = super().parse_hookimpl_opts(plugin, name)
        if opts is None and name.startswith(HOOK_PREFIX) and inspect.isroutine(getattr(plugin, name, None)):
            opts = {"wrapper": False, "hookwrapper": False, "optionalhook": False, "tryfirst": False,
                    "trylast": False, "specname": None}
        return opts


class Registry:
    """The loaded plugins: their device types and memory-hotplug methods, and the pluggy
    manager through which the core notifies them (notify())."""

    def __init__(self):
        self.manager = _PluginManager(hookspecs.PROJECT)
        self.manager.add_hookspecs(hookspecs)
        self.types: dict[str, DeviceType] = {}
        self.memory_methods: dict[str, object] = {}      # name → plugvm.memory_hotplug.MemoryHotplugMethod
        self.plugins: list[tuple[str, str, str]] = []     # (distribution, version, entry point name)
        self.disabled: list[str] = []                     # entry-point names left out ($PLUGVM_DISABLE_PLUGINS)

    def register(self, plugin, distribution: str = "", version: str = "", name: str | None = None) -> None:
        """Register one plugin (a module, or any object with hook implementations), then
        gather its device types and memory-hotplug methods. PluginError, naming the plugin,
        and nothing registered, when a hook implementation matches no spec or takes
        arguments its spec does not have, when a provider hook fails or returns something
        else than a list of the right objects, or when it clashes with a loaded plugin."""
        label = name or f"{distribution}:{getattr(plugin, '__name__', type(plugin).__name__)}"
        who = f"plugin {label}" if not distribution else f"plugin {getattr(plugin, '__name__', label)} ({distribution})"
        try:
            self.manager.register(plugin, name=label)
        except (pluggy.PluginValidationError, ValueError) as e:
            raise PluginError(f"{who}: {'; '.join(str(e).splitlines())}") from e   # one line, as every error
        try:
            unknown = sorted(c.name for c in self.manager.get_hookcallers(plugin) or () if not c.has_spec())
            if unknown:
                raise PluginError(f"{who}: {', '.join(unknown)} is not a plugvm hook (a typo? the hooks are "
                                  f"{', '.join(self.hook_names())})")
            types = [DeviceType(**{**t.__dict__, "distribution": distribution, "version": version})
                     for t in self._provided(plugin, who, "plugvm_device_types", DeviceType)]
            from plugvm.memory_hotplug import MemoryHotplugMethod
            methods = self._provided(plugin, who, "plugvm_memory_hotplug_methods", MemoryHotplugMethod)
            added = dict(self.types)
            for t in types:
                self._add(t, added)
            names = dict(self.memory_methods)
            for method in methods:
                old = names.get(method.name)
                if old is not None:
                    raise PluginError(f"plugins {old.distribution or '?'} and {distribution or '?'} both provide "
                                      f"the memory hotplug method {method.name!r}")
                names[method.name] = method
        except BaseException:
            self.manager.unregister(plugin)
            raise
        for method in methods:
            method.distribution = distribution
        self.types, self.memory_methods = added, names

    def check_pending(self) -> None:
        """pluggy's check that every hook implementation has a spec, as PluginError.
        register() refused each plugin's unknown hooks already; this is the backstop."""
        try:
            self.manager.check_pending()
        except pluggy.PluginValidationError as e:
            raise PluginError(str(e)) from e

    def _provided(self, plugin, who: str, hook: str, kind: type) -> list:
        """What `plugin`'s own implementation of a provider hook returns (none: [])."""
        found = []
        for impl in getattr(self.manager.hook, hook).get_hookimpls():
            if impl.plugin is not plugin:
                continue
            try:
                value = impl.function()
            except Exception as e:
                raise PluginError(f"{who}: {hook}() failed: {type(e).__name__}: {e}") from e
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, kind) for v in value):
                raise PluginError(f"{who}: {hook}() must return a list of {kind.__module__}.{kind.__name__}, "
                                  f"not {value!r:.200}")
            found += value
        return found

    def hook_names(self) -> list[str]:
        """Every hook a plugin may implement (the specs of hookspecs.py)."""
        return sorted(n for n, c in vars(self.manager.hook).items() if n.startswith(HOOK_PREFIX) and c.has_spec())

    def notify(self, hook: str, **kwargs) -> None:
        """Call every implementation of a notification hook with the spec's arguments.
        Each is called on its own: one that raises is logged, naming its plugin, and the
        rest still hear of it, so that an observer cannot break the VM or another plugin."""
        caller = getattr(self.manager.hook, hook)
        expected = set(caller.spec.argnames)
        if set(kwargs) != expected:      # the core's own mistake: fail loudly in tests
            raise TypeError(f"{hook}: called with {sorted(kwargs)}, the spec takes {sorted(expected)}")
        for impl in caller.get_hookimpls():
            try:
                impl.function(*(kwargs[a] for a in impl.argnames))
            except Exception:
                log.exception("a plugin's hook failed", plugin=impl.plugin_name, hook=hook)

    def _add(self, new: DeviceType, types: dict) -> None:
        for old in types.values():
            for attribute in ("name", "cli_option", "config_key", "api_verb"):
                value = getattr(new, attribute)
                if value is not None and value == getattr(old, attribute):
                    raise PluginError(f"plugins {old.distribution or '?'} and {new.distribution or '?'} both provide "
                                      f"the {attribute.replace('_', ' ')} {value!r}")
        types[new.name] = new

    def ordered(self) -> list[DeviceType]:
        return sorted(self.types.values(), key=lambda t: (t.order, t.name))

    def by_option(self, option: str) -> DeviceType | None:
        return next((t for t in self.types.values() if t.cli_option == option), None)

    def by_verb(self, verb: str) -> DeviceType | None:
        return next((t for t in self.types.values() if t.api_verb == verb), None)

    def by_key(self, key: str) -> DeviceType | None:
        return next((t for t in self.types.values() if t.config_key == key), None)


def lazy_exports(package: str, names: dict[str, str]) -> Callable[[str], object]:
    """A module-level __getattr__ (PEP 562) for a plugin's package: `names` maps each name
    the package exports to the submodule (relative, ".device") that defines it, imported
    on first use. Plugin discovery imports every installed plugin's package at start-up;
    with this, a device module (and what it imports) costs start-up time only in a VM
    that has such a device, not in every VM."""

    def __getattr__(name: str) -> object:
        module = names.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module, package), name)

    return __getattr__


def disabled_names() -> set[str]:
    return {n.strip() for n in os.environ.get(DISABLE_ENV, "").split(",") if n.strip()}


def load(skip=None) -> Registry:
    """A registry of every plugin installed in this Python environment, but those whose
    entry-point names $PLUGVM_DISABLE_PLUGINS lists (and those `skip(entry_point)` is
    true for: the conformance suite registers the plugin under test itself). PluginError
    naming the plugin when one cannot be imported or registered."""
    registry = Registry()
    disabled = disabled_names()
    for entry_point in sorted(plugin_index.entries(ENTRY_POINT_GROUP), key=lambda e: e.name):
        if skip is not None and skip(entry_point):
            continue
        if entry_point.name in disabled:
            registry.disabled.append(entry_point.name)
            continue
        distribution, version = entry_point.distribution, entry_point.version
        try:
            module = entry_point.load()
        except Exception as e:
            raise PluginError(f"plugin {entry_point.name!r} ({distribution}): cannot be loaded: {e}") from e
        registry.register(module, distribution, version)
        registry.plugins.append((distribution, version, entry_point.name))
    registry.check_pending()
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
    if registry.disabled:
        lines.append(f"disabled by {DISABLE_ENV}: {', '.join(registry.disabled)}")
    return "\n".join(lines)
