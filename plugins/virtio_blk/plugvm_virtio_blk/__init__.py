"""plugvm-virtio-blk: raw disk images as virtio-blk devices (--disk, vm.add-disk)."""

from __future__ import annotations

from plugvm.hookspecs import hookimpl
from plugvm.plugins import DeviceType, lazy_exports

from plugvm_virtio_blk.config import DiskConfig, from_json, parse
__all__ = ["DiskConfig", "DiskError", "VirtioBlk", "plugvm_device_types"]
__getattr__ = lazy_exports(__name__, {"DiskError": ".device", "VirtioBlk": ".device"})


def _create(config: DiskConfig, env):
    from plugvm_virtio_blk.device import VirtioBlk

    return VirtioBlk(config)


@hookimpl
def plugvm_device_types() -> list[DeviceType]:
    return [DeviceType(name="disk", kind="virtio", cli_option="--disk", config_key="disks", api_verb="vm.add-disk",
                       id_prefix="_disk", order=10, parse=parse, from_json=from_json,
                       create=_create,
                       help="a raw disk image: path=..,readonly=on|off,direct=on|off,id=..,serial=..,"
                            "num_queues=..,queue_size=..")]
