"""DeviceTypeTests: the plugin registers beside every installed plugin (the core refuses
a hook implementation that matches no hook, marked or not, naming it), and its
DeviceType is well formed and agrees with the capabilities the author declared."""

from __future__ import annotations

import re

import pytest

from plugvm.plugins import DeviceType, PluginError
from plugvm.testing.conformance import capabilities as caps
from plugvm.testing.conformance import registry as conformance_registry


class DeviceTypeTests:
    """The DeviceType is well formed and does not clash."""

    def test_registers_beside_the_installed_plugins(self, plugin, plugin_distribution, plugin_version,
                                                    plugin_entry_point, device_type_name):
        # Built here rather than through the fixture, so a clash or a hookimpl typo is this
        # test's failure with the core's message, not an error in setup.
        try:
            registry = conformance_registry.build(plugin, plugin_distribution, plugin_version, plugin_entry_point)
        except PluginError as e:
            pytest.fail(f"plugin {plugin_distribution!r} cannot be registered beside the installed plugins: {e}",
                        pytrace=False)
        conformance_registry.provided(registry.types, device_type_name, plugin_distribution, "device type",
                                      "plugvm_device_types")

    def test_is_well_formed(self, device_type: DeviceType):
        t, name = device_type, repr(device_type.name)
        assert t.kind == "virtio", f"device type {name}: kind {t.kind!r}; the core attaches only 'virtio'"
        assert re.fullmatch(r"--[a-z][a-z0-9-]*", t.cli_option), (
            f"device type {name}: cli_option {t.cli_option!r} is not a long option (--name)")
        assert re.fullmatch(r"[a-z][a-z0-9_]*", t.config_key), (
            f"device type {name}: config_key {t.config_key!r} is not a JSON field name")
        assert t.api_verb is None or re.fullmatch(r"vm\.add-[a-z0-9-]+", t.api_verb), (
            f"device type {name}: api_verb {t.api_verb!r} is not vm.add-<noun>")
        for part in ("parse", "from_json", "create"):
            assert callable(getattr(t, part)), f"device type {name}: {part} is not callable"
        # DeviceManager.add names a device by its config's id, else fixed_id, else the prefix.
        assert t.fixed_id or t.id_prefix, f"device type {name}: neither id_prefix nor fixed_id: its devices get no id"
        assert not (t.fixed_id and t.multiple), (
            f"device type {name}: fixed_id {t.fixed_id!r} with multiple=True: a second device would clash")
        if t.id_prefix is not None:
            assert not t.id_prefix.startswith("__"), (
                f"device type {name}: id_prefix {t.id_prefix!r}: '__' ids are cloud-hypervisor's built-ins")
        assert isinstance(t.order, int), f"device type {name}: order {t.order!r} is not an int"
        if t.default is not None:
            assert callable(t.default), f"device type {name}: default is not callable"
        if t.configured_by is not None:
            assert callable(t.configured_by), f"device type {name}: configured_by is not callable"

    def test_capabilities_agree_with_the_device_type(self, device_type: DeviceType, capabilities):
        unknown = set(capabilities) - caps.ALL
        assert not unknown, f"device type {device_type.name!r}: unknown capabilities {sorted(unknown)} (known: " \
                            f"{sorted(caps.ALL)})"
        name = repr(device_type.name)
        hotplug = caps.HOTPLUG in capabilities
        assert hotplug == (device_type.api_verb is not None), (
            f"device type {name} declares hotplug={hotplug} but its api_verb is {device_type.api_verb!r} (a type is "
            f"hot-added exactly when it has a verb)")
        if caps.REMOVE in capabilities:
            assert device_type.removable, f"device type {name} declares 'remove' but is removable=False"
            assert hotplug, f"device type {name} declares 'remove' without 'hotplug'"
        elif hotplug:
            assert not device_type.removable, (
                f"device type {name} is removable but does not declare 'remove': vm.remove-device would take it out "
                f"untested")
        assert (caps.VIRTIO in capabilities) == (device_type.kind == "virtio"), (
            f"device type {name} of kind {device_type.kind!r} declares virtio={caps.VIRTIO in capabilities}")
