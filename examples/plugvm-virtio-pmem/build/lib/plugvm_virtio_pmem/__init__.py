"""plugvm-virtio-pmem: a host file as a virtio-pmem device (--pmem, vm.add-pmem).

A third-party plugin: it uses only what the core offers every plugin (the hook, the
DeviceType, the config helpers, VirtioDevice and DeviceEnv.guest_ranges)."""

from __future__ import annotations

from plugvm.hookspecs import hookimpl
from plugvm.plugins import DeviceType

from plugvm_virtio_pmem.config import PmemConfig, from_json, parse
from plugvm_virtio_pmem.device import PmemError, VirtioPmem, create

__all__ = ["PmemConfig", "PmemError", "VirtioPmem", "plugvm_device_types"]

# cloud-hypervisor creates pmem devices after virtio-fs (50) and before vsock (70).
ORDER = 60


@hookimpl
def plugvm_device_types() -> list[DeviceType]:
    return [DeviceType(name="pmem", kind="virtio", cli_option="--pmem", config_key="pmem", api_verb="vm.add-pmem",
                       id_prefix="_pmem", order=ORDER, parse=parse, from_json=from_json, create=create,
                       help="a file as persistent memory: file=..,size=..,discard_writes=on|off,id=..")]
