"""The registry holds plugins to the hook specs: a misspelt hook or an argument no spec
has is refused at load, naming the plugin; notifications reach every implementation even
when one raises; $PLUGVM_DISABLE_PLUGINS leaves plugins out by entry-point name."""

import types

import pytest

from plugvm import plugins
from plugvm.hookspecs import hookimpl


def module(name="observer", **functions):
    return types.SimpleNamespace(__name__=name, **functions)


def test_a_misspelt_hook_is_refused_naming_the_plugin_and_the_hook():
    @hookimpl
    def plugvm_device_typs():
        return []

    registry = plugins.Registry()
    with pytest.raises(plugins.PluginError, match=r"plugin typo \(plugvm-typo\): plugvm_device_typs is not a plugvm "
                                                   r"hook \(a typo\? the hooks are plugvm_device_added, "):
        registry.register(module("typo", plugvm_device_typs=plugvm_device_typs), "plugvm-typo", "1")
    assert registry.manager.get_plugins() == set() and registry.types == {}


def test_an_unmarked_plugvm_function_counts_as_an_implementation_so_typos_are_caught():
    def plugvm_vm_boted(vm_config, boot):
        pass

    with pytest.raises(plugins.PluginError, match="plugvm_vm_boted is not a plugvm hook"):
        plugins.Registry().register(module(plugvm_vm_boted=plugvm_vm_boted), "plugvm-x")


def test_an_argument_the_spec_does_not_have_is_refused():
    @hookimpl
    def plugvm_device_added(device_id, slot):
        pass

    with pytest.raises(plugins.PluginError, match=r"plugin observer \(plugvm-x\).*plugvm_device_added.*slot"):
        plugins.Registry().register(module(plugvm_device_added=plugvm_device_added), "plugvm-x")


@pytest.mark.parametrize("returned, message", [
    (None, "plugvm_device_types\\(\\) must return a list of plugvm.plugins.DeviceType, not None"),
    (["disk"], "must return a list of plugvm.plugins.DeviceType, not \\['disk'\\]"),
])
def test_a_provider_returning_something_else_is_refused(returned, message):
    @hookimpl
    def plugvm_device_types():
        return returned

    with pytest.raises(plugins.PluginError, match=message):
        plugins.Registry().register(module(plugvm_device_types=plugvm_device_types), "plugvm-x")


def test_a_provider_that_raises_is_refused_with_its_error():
    @hookimpl
    def plugvm_device_types():
        raise KeyError("boom")

    with pytest.raises(plugins.PluginError, match=r"plugvm_device_types\(\) failed: KeyError: 'boom'"):
        plugins.Registry().register(module(plugvm_device_types=plugvm_device_types), "plugvm-x")


def test_a_notification_reaches_every_plugin_even_when_one_raises(capsys):
    heard = []

    class Broken:
        @hookimpl
        def plugvm_vm_booted(self, boot):
            raise RuntimeError("observer bug")

    class Listener:
        @hookimpl
        def plugvm_vm_booted(self, vm_config, boot):     # all the spec's arguments, or fewer
            heard.append((vm_config, boot))

    registry = plugins.Registry()
    registry.register(Listener(), name="listener")
    registry.register(Broken(), name="broken")
    registry.notify("plugvm_vm_booted", vm_config="cfg", boot=3)
    assert heard == [("cfg", 3)]


def test_the_core_calling_a_hook_with_other_arguments_is_a_type_error():
    with pytest.raises(TypeError, match="plugvm_vm_booted: called with \\['boot'\\], the spec takes"):
        plugins.Registry().notify("plugvm_vm_booted", boot=1)


def test_disabled_plugins_are_left_out_by_entry_point_name(monkeypatch):
    monkeypatch.setenv(plugins.DISABLE_ENV, " disk, vsock ,nonexistent")
    registry = plugins.load()
    assert "disk" not in registry.types and "vsock" not in registry.types and "net" in registry.types
    assert sorted(registry.disabled) == ["disk", "vsock"]
    assert "disabled by PLUGVM_DISABLE_PLUGINS: disk, vsock" in plugins.describe(registry)
    monkeypatch.delenv(plugins.DISABLE_ENV)
    assert "disk" in plugins.load().types


def test_every_installed_plugin_matches_the_specs():
    registry = plugins.load()          # check_pending() ran: no hook of theirs is unknown
    registry.manager.check_pending()
    assert {"disk", "net", "fs", "vsock", "rng", "console"} <= set(registry.types)
