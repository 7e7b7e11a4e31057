"""plugvm-virtio-net: virtio-net devices on host taps (--net, vm.add-net)."""

from __future__ import annotations

from plugvm.hookspecs import hookimpl
from plugvm.plugins import DeviceType

from plugvm_virtio_net.config import NetConfig, from_json, parse
from plugvm_virtio_net.device import VirtioNet
from plugvm_virtio_net.tap import Tap, TapError

__all__ = ["NetConfig", "Tap", "TapError", "VirtioNet", "plugvm_device_types"]


@hookimpl
def plugvm_device_types() -> list[DeviceType]:
    return [DeviceType(name="net", kind="virtio", cli_option="--net", config_key="net", api_verb="vm.add-net",
                       id_prefix="_net", order=20, multiple=True, parse=parse, from_json=from_json,
                       create=lambda config, env: VirtioNet(config),
                       help="a tap network interface: tap=..,mac=..,host_mac=..,ip=..,mask=..,mtu=..,"
                            "num_queues=2,queue_size=..,offload_tso|ufo|csum=on|off,id=..")]
