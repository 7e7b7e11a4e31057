"""plugvm-virtio-net against the plugin conformance suite, on real taps (root, as CI runs)."""

import pytest

import plugvm_virtio_net
from plugvm.testing.conformance import DeviceConformance

GUEST_MAC = "52:54:00:12:34:56"


class TestVirtioNet(DeviceConformance):
    @pytest.fixture
    def plugin(self):
        return plugvm_virtio_net

    @pytest.fixture
    def device_type_name(self):
        return "net"

    @pytest.fixture
    def valid_options(self):
        # No tap name: each create() makes a fresh vmtapN and close() deletes it.
        return ["", f"mac={GUEST_MAC},ip=192.168.251.1,mask=255.255.255.0,mtu=1400,queue_size=64,"
                    f"offload_tso=off,id=n0"]

    @pytest.fixture
    def invalid_options(self):
        return [("tap=t0,colour=red", "'colour'"), ("mac=12:34:56", "mac='12:34:56'"),
                ("queue_size=100", "queue_size"), ("num_queues=4", "num_queues")]

    @pytest.fixture
    def invalid_json(self):
        return [({"mtu": "1500"}, "mtu"), ({"fds": [3, 4]}, "fds")]

    @pytest.fixture
    def failing_options(self):
        # An IPv4 address the kernel refuses on a tap (a network address with a /32 is fine;
        # a multicast one is not): the tap is made, then its configuration fails.
        return ["ip=224.0.0.1,mask=255.255.255.0"]

    @pytest.fixture
    def request_samples(self):
        # virtio_net_hdr_v1 (12 bytes) followed by the start of an Ethernet frame: TX chains
        # that reach the tap.
        header = bytes(12)
        return [header + b"\xff" * 6 + bytes.fromhex(GUEST_MAC.replace(":", "")) + b"\x08\x06" + bytes(28)]
