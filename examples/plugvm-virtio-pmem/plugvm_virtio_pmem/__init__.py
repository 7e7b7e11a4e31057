"""plugvm-virtio-pmem: a host file as a virtio-pmem device (--pmem, vm.add-pmem).

A third-party plugin: it uses only what the core offers every plugin (the hook, the
DeviceType, the config helpers, VirtioDevice and DeviceEnv.guest_ranges)."""

from __future__ import annotations

from plugvm.hookspecs import hookimpl
from plugvm.plugins import DeviceType, lazy_exports

from plugvm_virtio_pmem.config import PmemConfig, from_json, parse

__all__ = ["PmemConfig", "PmemError", "VirtioPmem", "plugvm_device_types"]
# The device module is imported when a pmem device is made: start-up pays only for the
# plugins a VM uses (docs/plugins.md, "Start-up").
__getattr__ = lazy_exports(__name__, {"PmemError": ".device", "VirtioPmem": ".device"})

# cloud-hypervisor creates pmem devices after virtio-fs (50) and before vsock (70).
ORDER = 60


def _create(config: PmemConfig, env):
    from plugvm_virtio_pmem.device import create

    return create(config, env)


@hookimpl
def plugvm_device_types() -> list[DeviceType]:
    return [DeviceType(name="pmem", kind="virtio", cli_option="--pmem", config_key="pmem", api_verb="vm.add-pmem",
                       id_prefix="_pmem", order=ORDER, parse=parse, from_json=from_json, create=_create,
                       help="a file as persistent memory: file=..,size=..,discard_writes=on|off,id=..")]
