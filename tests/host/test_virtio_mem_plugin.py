"""plugvm-virtio-mem as installed: its method and device type come through the real
registry, --memory hotplug_method=virtio-mem parses and asks for the device, and
pip-uninstalling the distribution takes the method away with a one-line error."""

import subprocess
import sys
from pathlib import Path

import pytest

from plugvm import plugins
from plugvm.config import ConfigError, parse_cli
from plugvm.config.memory import MemoryConfig
from plugvm.config.payload import PayloadConfig
from plugvm.config.vm import VmConfig
from plugvm.device_manager import boot_devices

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
GiB = 1 << 30


@pytest.fixture(scope="module")
def registry():
    return plugins.load()


@pytest.fixture
def kernel(tmp_path):
    path = tmp_path / "k"
    path.write_bytes(b"\x7fELF" + bytes(4092))      # enough of an ELF vmlinux for the payload check
    return path


def test_the_method_and_the_device_type_come_from_plugvm_virtio_mem(registry):
    method = registry.memory_methods["virtio-mem"]
    assert (method.distribution, method.registers_size) == ("plugvm-virtio-mem", 0)
    device_type = registry.types["virtio-mem"]
    assert device_type.distribution == "plugvm-virtio-mem"
    assert (device_type.kind, device_type.fixed_id, device_type.order, device_type.removable,
            device_type.api_verb) == ("virtio", "mem0", 70, False, None)
    listed = plugins.describe(registry).splitlines()
    assert any(line.startswith("memory ") and "plugvm-virtio-mem" in line and "hotplug_method=virtio-mem" in line
               for line in listed), listed
    assert any(line.startswith("virtio-mem plugvm-virtio-mem") for line in listed), listed


def boot_types(registry, vm_config):
    # Only the registry and the VM config matter for which devices a boot builds.
    return [(t.name, c) for t, c in boot_devices(registry, vm_config)]


def test_the_command_line_asks_for_the_device_after_the_other_built_ins(registry, kernel):
    cli = parse_cli(["--kernel", str(kernel), "--memory", "hotplug_method=virtio-mem,hotplug_size=1G"], registry)
    memory = cli.vm.memory
    assert (memory.hotplug_method, memory.hotplug_size, memory.hotplugged_size) == ("virtio-mem", GiB, None)
    assert "memory" not in cli.vm.devices
    wanted = boot_types(registry, cli.vm)
    assert wanted[-1] == ("virtio-mem", memory)
    assert [name for name, _ in wanted].index("rng") < len(wanted) - 1


@pytest.mark.parametrize("memory", [MemoryConfig(size=GiB), MemoryConfig(hotplug_method="acpi", hotplug_size=GiB),
                                    MemoryConfig(hotplug_method="virtio-mem")])
def test_no_device_without_virtio_mem_hotplug(registry, kernel, memory):
    vm_config = VmConfig(payload=PayloadConfig(kernel=kernel), memory=memory)
    assert "virtio-mem" not in [name for name, _ in boot_types(registry, vm_config)]


def test_the_method_checks_the_command_line(registry, kernel):
    with pytest.raises(ConfigError, match=r"^--memory: hotplug_size=100M is not a multiple of 128M"):
        parse_cli(["--kernel", str(kernel), "--memory", "hotplug_method=virtio-mem,hotplug_size=100M"], registry)


def test_the_json_config_round_trips(registry, kernel):
    body = {"payload": {"kernel": str(kernel)},
            "memory": {"size": GiB, "hotplug_method": "VirtioMem", "hotplug_size": 8 * GiB,
                       "hotplugged_size": GiB}}
    config = VmConfig.from_json(body, registry)
    assert config.memory.hotplug_method == "virtio-mem"
    assert config.to_json()["memory"]["hotplug_method"] == "VirtioMem"
    assert VmConfig.from_json(config.to_json(), registry) == config
    with pytest.raises(ConfigError, match=r"^memory: hotplugged_size=1000 is not a multiple"):
        VmConfig.from_json({**body, "memory": {**body["memory"], "hotplugged_size": 1000}}, registry)


def plugvm(*args):
    return subprocess.run([BIN / "plugvm", *args], capture_output=True, text=True, timeout=60)


def pip(*args):
    subprocess.run([sys.executable, "-m", "pip", "--quiet", *args], check=True, timeout=600)


def test_uninstalling_plugvm_virtio_mem_takes_the_method_away_and_reinstalling_restores_it(kernel):
    args = ("--kernel", str(kernel), "--memory", "hotplug_method=virtio-mem,hotplug_size=1G")
    assert "hotplug_method=virtio-mem" in plugvm("--list-plugins").stdout
    pip("uninstall", "-y", "plugvm-virtio-mem")
    try:
        gone = plugvm(*args)
        assert gone.returncode == 1
        lines = gone.stderr.strip().splitlines()
        assert len(lines) == 1, gone.stderr
        assert "plugvm-virtio-mem" in lines[0] and "hotplug_method" in lines[0], lines
        listed = plugvm("--list-plugins").stdout
        assert "virtio-mem" not in listed, listed
    finally:
        pip("install", "-e", str(ROOT / "plugins" / "virtio_mem"))
    back = plugvm("--list-plugins")
    assert back.returncode == 0
    assert any(line.startswith("memory ") and "plugvm-virtio-mem" in line for line in back.stdout.splitlines())
