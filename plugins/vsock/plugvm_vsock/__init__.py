"""plugvm-vsock: cloud-hypervisor's hybrid virtio-vsock, the host side a unix socket
(--vsock, vm.add-vsock)."""

from __future__ import annotations

from plugvm.hookspecs import hookimpl
from plugvm.plugins import DeviceType, lazy_exports

from plugvm_vsock.config import VsockConfig, from_json, parse

__all__ = ["Listener", "VirtioVsock", "VsockConfig", "VsockError", "plugvm_device_types"]
__getattr__ = lazy_exports(__name__, {"Listener": ".listener", "VirtioVsock": ".device", "VsockError": ".listener"})


def _create(config: VsockConfig, env):
    from plugvm_vsock.device import VirtioVsock

    return VirtioVsock(config, env.handover)


@hookimpl
def plugvm_device_types() -> list[DeviceType]:
    # order 70: after fs (50) and pmem (60), as ch creates vsock (notes §2.2).
    return [DeviceType(name="vsock", kind="virtio", cli_option="--vsock", config_key="vsock",
                       api_verb="vm.add-vsock", id_prefix="_vsock", order=70, multiple=False, parse=parse,
                       from_json=from_json, create=_create,
                       help="a hybrid vsock, the host side a unix socket plugvm binds: cid=..,socket=..,id=..")]
