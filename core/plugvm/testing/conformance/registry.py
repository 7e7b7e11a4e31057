"""The registry a conformance test runs against: every installed plugin except the one
under test (plugins.load()), then the plugin under test registered the way load()
registers one, so that a clash with an installed plugin, or a hookimpl that matches no
hook, fails with the core's own error naming the plugin."""

from __future__ import annotations

from importlib import metadata

import pytest

from plugvm import plugins
from plugvm.plugins import Registry


def entry_point_of(plugin) -> metadata.EntryPoint | None:
    """The installed entry point in the `plugvm` group that loads `plugin`, if any."""
    name = getattr(plugin, "__name__", None)
    for entry_point in metadata.entry_points(group=plugins.ENTRY_POINT_GROUP):
        if name is not None and entry_point.module == name and not entry_point.attr:
            return entry_point
    return None


def build(plugin, distribution: str, version: str = "", own: metadata.EntryPoint | None = None) -> Registry:
    """The installed plugins less `plugin`'s own entry point (`own`, entry_point_of()),
    then `plugin`. Raises PluginError (from the core) on a clash or an unmatched hookimpl."""
    registry = plugins.load(skip=lambda entry_point: own is not None and entry_point.value == own.value)
    registry.register(plugin, distribution, version)
    registry.plugins.append((distribution, version, own.name if own is not None else distribution))
    registry.check_pending()
    return registry


def provided(found: dict, name: str, distribution: str, what: str, hook: str):
    """The `name` entry of a registry's `found` (its types or memory_methods) when the
    plugin under test (`distribution`) provides it; else the test fails, naming what
    that plugin's `hook` does give."""
    entry = found.get(name)
    if entry is None or entry.distribution != distribution:
        given = sorted(key for key, item in found.items() if item.distribution == distribution)
        pytest.fail(f"plugin {distribution!r} provides no {what} named {name!r} (its {hook}() gives {given})",
                    pytrace=False)
    return entry
