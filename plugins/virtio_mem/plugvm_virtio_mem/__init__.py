"""plugvm-virtio-mem: memory hotplug through a virtio-mem device
(`--memory hotplug_method=virtio-mem,hotplug_size=...`, vm.resize desired_ram).

Two registrations: the method (method.py), and the device type of its one device, which
the VM config's memory part sets (configured_by), as the console's is set by its console
part: it has no option or JSON field of its own.
"""

from __future__ import annotations

from plugvm.config import ConfigError
from plugvm.errors import PlugvmError
from plugvm.hookspecs import hookimpl
from plugvm.plugins import DeviceType, lazy_exports

from plugvm_virtio_mem.method import NAME, VirtioMemHotplug, VirtioMemMethod

__all__ = ["VirtioMem", "VirtioMemHotplug", "VirtioMemMethod", "plugvm_device_types",
           "plugvm_memory_hotplug_methods"]

__getattr__ = lazy_exports(__name__, {"VirtioMem": ".device"})
DEVICE_ID = "mem0"          # ch names the device after its memory zone; the default zone's is mem0


class VirtioMemError(PlugvmError, RuntimeError):
    """The virtio-mem device was asked for in a boot without virtio-mem hotplug."""


def _configs(vm_config) -> tuple:
    memory = vm_config.memory
    return (memory,) if memory.hotplug_method == NAME and memory.hotplug_size is not None else ()


def _not_parsed(_value) -> object:
    # configured_by types are skipped by the CLI and JSON parsers; reaching here is a core bug.
    raise ConfigError("--memory: the virtio-mem device is set by hotplug_method=virtio-mem, not by an option "
                      "of its own")


def _create(config, env):
    from plugvm_virtio_mem.device import VirtioMem

    hotplug = getattr(env, "memory_hotplug", None)
    if not isinstance(hotplug, VirtioMemHotplug):
        raise VirtioMemError("--memory hotplug_method=virtio-mem: this boot has no virtio-mem region "
                             f"(its memory hotplug is {type(hotplug).__name__})")
    return VirtioMem(hotplug.region)


@hookimpl
def plugvm_memory_hotplug_methods() -> list:
    return [VirtioMemMethod()]


@hookimpl
def plugvm_device_types() -> list[DeviceType]:
    return [DeviceType(name="virtio-mem", kind="virtio", cli_option="--memory", config_key="memory", multiple=False,
                       parse=_not_parsed, from_json=_not_parsed, create=_create, configured_by=_configs,
                       fixed_id=DEVICE_ID, order=70, removable=False,
                       help="virtio-mem, set by --memory hotplug_method=virtio-mem,hotplug_size=SIZE")]
