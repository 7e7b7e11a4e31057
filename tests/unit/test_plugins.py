"""The plugin registry: device types from hook implementations, clashes refused,
and the CLI and JSON config built from whatever is registered."""

import types
from dataclasses import dataclass

import pytest

from plugvm import plugins
from plugvm.config import ConfigError, parse_cli
from plugvm.config.vm import VmConfig
from plugvm.hookspecs import hookimpl


@dataclass(frozen=True)
class WidgetConfig:
    size: int
    id: str | None = None

    def to_json(self):
        return {"size": self.size}


def widget_plugin(name="widget", option="--widget", key="widgets", verb="vm.add-widget"):
    def parse(text):
        if not text.startswith("size="):
            raise ConfigError(f"{option}: expected size=N")
        return WidgetConfig(int(text[5:]))

    @hookimpl
    def plugvm_device_types():
        return [plugins.DeviceType(name=name, kind="virtio", cli_option=option, config_key=key, api_verb=verb,
                                   parse=parse, from_json=lambda body: WidgetConfig(body["size"]),
                                   create=lambda config, env: None, id_prefix="_widget", help="a test widget")]
    return types.SimpleNamespace(__name__=f"test_{name}", plugvm_device_types=plugvm_device_types)


@pytest.fixture
def registry():
    r = plugins.Registry()
    r.register(widget_plugin(), "plugvm-widget", "1.2")
    return r


def test_registered_types_are_found_by_option_verb_and_key(registry):
    t = registry.types["widget"]
    assert registry.by_option("--widget") is t and registry.by_verb("vm.add-widget") is t
    assert registry.by_key("widgets") is t and (t.distribution, t.version) == ("plugvm-widget", "1.2")
    assert "widget     plugvm-widget 1.2: --widget, config widgets, API vm.add-widget" in plugins.describe(registry)


@pytest.mark.parametrize("clash", [dict(name="widget", option="--w2", key="w2", verb=None),
                                   dict(name="w2", option="--widget", key="w2", verb=None),
                                   dict(name="w2", option="--w2", key="widgets", verb=None),
                                   dict(name="w2", option="--w2", key="w2", verb="vm.add-widget")])
def test_two_plugins_claiming_the_same_thing_are_refused(registry, clash):
    with pytest.raises(plugins.PluginError, match="plugins plugvm-widget and other both provide"):
        registry.register(widget_plugin(**clash), "other", "1")


def test_cli_options_come_from_the_registry(registry, tmp_path):
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"\x7fELF")
    cli = parse_cli(["--kernel", str(kernel), "--widget", "size=1", "size=2", "--widget", "size=3"], registry)
    assert cli.vm.devices == {"widgets": (WidgetConfig(1), WidgetConfig(2), WidgetConfig(3))}
    with pytest.raises(ConfigError, match="^--widget: expected size=N$"):
        parse_cli(["--kernel", str(kernel), "--widget", "colour=red"], registry)
    with pytest.raises(ConfigError, match="^--disk: unknown option"):
        parse_cli(["--kernel", str(kernel), "--disk", "path=/x"], registry)


def test_json_device_fields_come_from_the_registry(registry, tmp_path):
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes(b"\x7fELF")
    body = {"payload": {"kernel": str(kernel)}, "widgets": [{"size": 4}]}
    vm = VmConfig.from_json(body, registry)
    assert vm.devices == {"widgets": (WidgetConfig(4),)}
    assert vm.to_json()["widgets"] == [{"size": 4}]
    # ch's disks field, with no plugin installed to provide it: empty asks for nothing.
    assert VmConfig.from_json({**body, "disks": []}, registry) == vm
    with pytest.raises(ConfigError, match="disks=.* is not supported: no installed plugin provides it; it comes "
                                          "with the plugvm-virtio-blk distribution"):
        VmConfig.from_json({**body, "disks": [{"path": "/x"}]}, registry)


def test_installed_plugins_are_loaded_from_entry_points():
    registry = plugins.load()
    assert {"disk", "net", "rng"} <= set(registry.types)
    assert registry.types["rng"].distribution == "plugvm"
    assert registry.types["disk"].distribution == "plugvm-virtio-blk"
