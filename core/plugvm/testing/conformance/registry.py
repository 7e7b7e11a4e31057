"""The registry a conformance test runs against: every installed plugin except the one
under test, then the plugin under test registered the way plugins.load() registers it,
so that a clash with an installed plugin, or a hookimpl that matches no hook, fails with
the core's own error naming the plugin."""

from __future__ import annotations

from importlib import metadata

from plugvm import plugins
from plugvm.plugins import PluginError, Registry


def entry_point_of(plugin) -> metadata.EntryPoint | None:
    """The installed entry point in the `plugvm` group that loads `plugin`, if any."""
    name = getattr(plugin, "__name__", None)
    for entry_point in metadata.entry_points(group=plugins.ENTRY_POINT_GROUP):
        if name is not None and entry_point.module == name and not entry_point.attr:
            return entry_point
    return None


def unmatched_hookimpls(registry: Registry) -> list[str]:
    """Hook implementations of the registry's plugins that match no plugvm hook spec
    (a typo such as `plugvm_device_typs`), as 'plugin: hook' strings."""
    found = []
    hooks = registry.manager.hook
    for name in sorted(vars(hooks)):
        caller = getattr(hooks, name)
        if caller.has_spec():
            continue
        for impl in caller.get_hookimpls():
            if not impl.optionalhook:
                found.append(f"{impl.plugin_name}: {name}")
    return found


def check_pending(registry: Registry, distribution: str) -> None:
    """PluginError naming the plugin and the hook for every hookimpl with no spec: the
    core's Registry.check_pending() where it has one, else the same check here."""
    core_check = getattr(registry, "check_pending", None)
    if core_check is not None:
        core_check()
        return
    unmatched = unmatched_hookimpls(registry)
    if unmatched:
        raise PluginError(f"plugin {distribution or '?'} implements hooks plugvm does not have (a typo?): "
                          f"{', '.join(unmatched)}; the hooks are those of plugvm.hookspecs")


def build(plugin, distribution: str, version: str = "") -> Registry:
    """The installed plugins less `plugin`'s own entry point, then `plugin`. Raises
    PluginError (from the core) on a clash or an unmatched hookimpl."""
    own = entry_point_of(plugin)
    registry = Registry()
    for entry_point in sorted(metadata.entry_points(group=plugins.ENTRY_POINT_GROUP), key=lambda e: e.name):
        if own is not None and entry_point.value == own.value:
            continue
        dist = entry_point.dist
        registry.register(entry_point.load(), dist.name if dist else "", dist.version if dist else "")
        registry.plugins.append((dist.name if dist else "", dist.version if dist else "", entry_point.name))
    registry.register(plugin, distribution, version)
    registry.plugins.append((distribution, version, own.name if own is not None else distribution))
    check_pending(registry, distribution)
    return registry
