"""The conformance suite's fixtures, loaded as a pytest plugin by plugvm's own
(plugvm.testing.pytest_plugin), so an author imports only the test classes.

Fixtures an author overrides (in the subclass, the module or a conftest) fail or give
empty defaults here; the rest are derived from them. Each is described in the package
docstring (plugvm.testing.conformance)."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import pytest

from plugvm.config.console import ConsoleMode, VirtioConsoleConfig
from plugvm.config.memory import MemoryConfig
from plugvm.config.payload import PayloadConfig
from plugvm.config.vm import VmConfig
from plugvm.device_manager import DeviceEnv
from plugvm.testing.conformance import capabilities as caps
from plugvm.testing.conformance import registry as conformance_registry_module
from plugvm.testing.tiny_kernel import bzimage

MiB = 1 << 20


def substitute(text: str, backend: dict) -> str:
    """`text` with each "{name}" of the backend's substitutions replaced (no other
    brace is touched, so option texts need no escaping)."""
    for name, value in backend.items():
        text = text.replace("{" + name + "}", str(value))
    return text


# --- what an author overrides --------------------------------------------------------------

@pytest.fixture
def plugin():
    pytest.fail("conformance: override the `plugin` fixture with the module (or object) that holds the plugin's "
                "hookimpls, e.g. `import plugvm_widget` and `return plugvm_widget`")


@pytest.fixture
def device_type_name() -> str:
    pytest.fail("conformance: override the `device_type_name` fixture with the DeviceType.name under test")


@pytest.fixture
def capabilities() -> set[str]:
    return set(caps.DEFAULT)


@pytest.fixture
def backend() -> dict:
    return {}


@pytest.fixture
def valid_options() -> list[str]:
    return []


@pytest.fixture
def invalid_options() -> list[tuple[str, str]]:
    return []


@pytest.fixture
def invalid_json() -> list[tuple[object, str]]:
    return []


@pytest.fixture
def failing_options() -> list[str]:
    return []


@pytest.fixture
def request_samples() -> list[bytes]:
    return []


@pytest.fixture
def hostile_examples() -> int:
    return 50


@pytest.fixture
def memory_config() -> MemoryConfig:
    return MemoryConfig(size=64 * MiB)


@pytest.fixture
def guest_driver() -> str:
    pytest.fail("conformance: override the `guest_driver` fixture with the guest kernel driver that binds the "
                "virtio device (as /sys/bus/pci/devices/BDF/virtio*/driver names it: 'virtio_blk', 'virtio_pmem')")


@pytest.fixture
def plugin_entry_point(plugin):
    """The installed entry point that loads `plugin` (None for one that is not installed)."""
    return conformance_registry_module.entry_point_of(plugin)


@pytest.fixture
def plugin_distribution(plugin_entry_point) -> str:
    dist = plugin_entry_point.dist if plugin_entry_point is not None else None
    return dist.name if dist else "conformance-test-plugin"


@pytest.fixture
def plugin_version(plugin_entry_point) -> str:
    dist = plugin_entry_point.dist if plugin_entry_point is not None else None
    return dist.version if dist else "0"


# --- derived -------------------------------------------------------------------------------

@pytest.fixture
def tiny_kernel(tmp_path) -> Path:
    """A bzImage that spins without output: enough for a Machine that is never run."""
    path = tmp_path / "conformance-spin.bzImage"
    path.write_bytes(bzimage(b"", poweroff=False))
    return path


@pytest.fixture
def vm_config(tiny_kernel, memory_config) -> VmConfig:
    # The virtio-console discards what it gets (ch's default, tty, would take the test's terminal).
    return VmConfig(payload=PayloadConfig(kernel=tiny_kernel), memory=memory_config,
                    console=VirtioConsoleConfig(mode=ConsoleMode.NULL))


@pytest.fixture
def device_env(vm_config, device_type_name):
    """What create() gets outside a VM: the VM config, and guest-physical ranges from the
    core's own DeviceMemory over a recording VM (plugvm.testing.device_memory), so that a
    device owning guest memory (virtio-pmem) is built as in a VM, its mappings real."""
    from plugvm.testing.device_memory import device_memory

    memory = device_memory()
    yield DeviceEnv(vm_config, guest_ranges=memory.for_device(f"conformance-{device_type_name}"))
    memory.close()


@pytest.fixture
def conformance_registry(plugin, plugin_distribution, plugin_version, plugin_entry_point):
    return conformance_registry_module.build(plugin, plugin_distribution, plugin_version, plugin_entry_point)


@pytest.fixture
def device_type(conformance_registry, device_type_name, plugin_distribution):
    return conformance_registry_module.provided(conformance_registry.types, device_type_name, plugin_distribution,
                                                "device type", "plugvm_device_types")


@pytest.fixture
def option_texts(valid_options, backend) -> list[str]:
    return [substitute(text, backend) for text in valid_options]


@pytest.fixture
def device_configs(device_type, option_texts, vm_config) -> list:
    """A config per valid option text; for a type set by another part of the VM config
    (configured_by), the configs that part asks for; else the type's default."""
    if option_texts:
        return [device_type.parse(text) for text in option_texts]
    if device_type.configured_by is not None:
        return list(device_type.configured_by(vm_config))
    if device_type.default is not None:
        return [device_type.default()]
    return []


@pytest.fixture
def device_config(device_configs, device_type):
    if not device_configs:
        pytest.fail(f"device type {device_type.name!r}: no config to build a device from: give `valid_options`, "
                    f"or override `device_config`")
    return device_configs[0]


@pytest.fixture
def conformance_device(device_type, device_config, device_env):
    """One device built by the type's create() from `device_config`; closed after the test."""
    device = device_type.create(device_config, device_env)
    yield device
    device.close()


@contextmanager
def machine_of(registry, vm_config):
    """A Machine of `vm_config` on this host's /dev/kvm with `registry` (never run: the
    test plays its guest), its consoles discarding; closed, with its Kvm, at the end."""
    # Imported here: the fixtures load with every pytest run, a Machine's imports need not.
    from plugvm.kvm import Kvm
    from plugvm.machine import Machine
    from plugvm.serial_port import ConsoleBackend, Consoles

    kvm = Kvm()
    consoles = Consoles(serial=ConsoleBackend("null"), console=ConsoleBackend("null"))
    machine = None
    try:
        machine = Machine(kvm, vm_config, consoles, kvm.supported_cpuid(), registry)
        yield machine
    finally:
        if machine is not None:
            machine.close()
        consoles.close()
        kvm.close()


@pytest.fixture
def conformance_machine(conformance_registry, vm_config):
    """A Machine of the tiny kernel with the registry under test (machine_of)."""
    with machine_of(conformance_registry, vm_config) as machine:
        yield machine
