"""The plugin conformance suite: abstract test classes a plugin author subclasses.

    pip install 'plugvm[conformance]'

    # tests/test_conformance.py of plugvm-widget
    import pytest
    import plugvm_widget
    from plugvm.testing.conformance import DeviceConformance

    class TestWidget(DeviceConformance):
        @pytest.fixture
        def plugin(self):
            return plugvm_widget              # the module (or object) holding the hookimpls

        @pytest.fixture
        def device_type_name(self):
            return "widget"                   # DeviceType.name

        @pytest.fixture
        def valid_options(self):
            return ["path={path}", "path={path},queue_size=64,id=w0"]

        @pytest.fixture
        def backend(self, tmp_path):          # what "{name}" in option texts becomes
            (tmp_path / "w.img").write_bytes(bytes(1 << 20))
            return {"path": tmp_path / "w.img"}

The classes (DeviceConformance is the first five together):

    DeviceTypeTests    registers beside every installed plugin (no clash, no hookimpl
                       that matches no hook), the DeviceType well formed
    ConfigTests        option text -> config -> JSON -> config round-trips; unknown keys
                       and bad values raise ConfigError naming them; arbitrary input
                       raises nothing else (hypothesis)
    LifecycleTests     create() then close() leaves no fd, thread or file mapping; a
                       create() that fails (bad input, or an fd refused at any point)
                       releases what it opened
    VirtioDeviceTests  features, queues, activate and reset; a hostile guest's queues
                       (hypothesis) give at worst DeviceError/VirtqueueError, no write
                       outside the buffers offered, no used entry it did not offer
    HotplugTests       hot-add to a Machine on this host's /dev/kvm and eject: all
                       released, slot and BAR reused; a failed add leaves nothing
    GuestTests         (the lab) hot-add over the API to a real guest, which binds the
                       driver `guest_driver` names, then remove
    MemoryMethodTests  a memory-hotplug method (plugvm_memory_hotplug_methods)

Fixtures an author may override, beside `plugin` and `device_type_name` (defaults in
plugvm.testing.conformance.fixtures):

    capabilities      what the device supports, from capabilities.ALL: options,
                      virtio, queues, hotplug, remove, guest. A test needing one the
                      device lacks is skipped, naming it; the default is all but guest.
    valid_options     option texts (with "{name}" from `backend`) that parse and create
    invalid_options   (text, what the ConfigError must say)
    invalid_json      (body, what the ConfigError must say)
    failing_options   texts that parse but whose create() fails (a missing file)
    request_samples   bytes a driver puts at the start of a request, so that hostile
                      chains reach the device's data path
    memory_config, vm_config, device_env
                      the VM a device is built for (device_env has guest_ranges)
    plugin_entry_point, plugin_distribution, plugin_version
                      the installed entry point that loads `plugin`, and its
                      distribution's name and version
"""

from __future__ import annotations

import importlib

# Class → module; imported on first use, so that loading the default fixtures (every
# pytest run with plugvm installed) costs nothing and needs no hypothesis.
_EXPORTS = {
    "DeviceTypeTests": "device_type",
    "ConfigTests": "config",
    "LifecycleTests": "lifecycle",
    "VirtioDeviceTests": "virtio",
    "HotplugTests": "hotplug",
    "GuestTests": "guest",
    "MemoryMethodTests": "memory_method",
    "DeviceConformance": "suite",
    "Resources": "resources",
    "api": "guest",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def __dir__():
    return __all__
