"""plugvm-virtio-net: virtio-net devices on host taps (--net, vm.add-net)."""

from __future__ import annotations

from plugvm.hookspecs import hookimpl
from plugvm.plugins import DeviceType, lazy_exports

from plugvm_virtio_net.config import NetConfig, from_json, parse
__all__ = ["NetConfig", "Tap", "TapError", "VirtioNet", "plugvm_device_types"]
__getattr__ = lazy_exports(__name__, {"Tap": ".tap", "TapError": ".tap", "VirtioNet": ".device"})


def _create(config: NetConfig, env):
    from plugvm_virtio_net.device import VirtioNet

    return VirtioNet(config)


@hookimpl
def plugvm_device_types() -> list[DeviceType]:
    return [DeviceType(name="net", kind="virtio", cli_option="--net", config_key="net", api_verb="vm.add-net",
                       id_prefix="_net", order=20, multiple=True, parse=parse, from_json=from_json,
                       create=_create,
                       help="a tap network interface: tap=..,mac=..,host_mac=..,ip=..,mask=..,mtu=..,"
                            "num_queues=2,queue_size=..,offload_tso|ufo|csum=on|off,id=..")]
