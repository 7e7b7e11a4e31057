"""plugvm-virtio-fs: a shared host folder in the guest through virtiofsd (--fs, vm.add-fs)."""

from __future__ import annotations

import sys

from plugvm.hookspecs import hookimpl
from plugvm.plugins import DeviceType, lazy_exports

from plugvm_virtio_fs.config import FsConfig, from_json, parse

__all__ = ["FsConfig", "FsError", "VirtioFs", "plugvm_device_types", "plugvm_memory_added"]
__getattr__ = lazy_exports(__name__, {"FsError": ".device", "VirtioFs": ".device"})


def _create(config: FsConfig, env):
    from plugvm_virtio_fs.device import VirtioFs

    return VirtioFs(config, env.vm_config.memory, env.handover, hotplug=env.hotplug)


@hookimpl
def plugvm_device_types() -> list[DeviceType]:
    return [DeviceType(name="fs", kind="virtio", cli_option="--fs", config_key="fs", api_verb="vm.add-fs",
                       id_prefix="_fs", order=50, multiple=True, parse=parse, from_json=from_json, create=_create,
                       help="a host folder served by virtiofsd (vhost-user; needs --memory shared=on): "
                            "tag=..,socket=..,num_queues=1,queue_size=1024,id=..")]


@hookimpl
def plugvm_memory_added(region, devices) -> None:
    if "plugvm_virtio_fs.device" not in sys.modules:
        return              # no virtio-fs device was ever made: none of `devices` is one
    from plugvm_virtio_fs.device import VirtioFs

    for device in devices:
        if isinstance(device, VirtioFs):
            device.memory_added(region)
