"""plugvm-virtio-blk against the plugin conformance suite."""

import struct

import pytest

import plugvm_virtio_blk
from plugvm.testing.conformance import DeviceConformance


class TestVirtioBlk(DeviceConformance):
    @pytest.fixture
    def plugin(self):
        return plugvm_virtio_blk

    @pytest.fixture
    def device_type_name(self):
        return "disk"

    @pytest.fixture
    def backend(self, tmp_path):
        image = tmp_path / "disk.img"
        image.write_bytes(bytes(1 << 20))
        return {"path": image, "missing": tmp_path / "missing.img"}

    @pytest.fixture
    def valid_options(self):
        return ["path={path}", "path={path},readonly=on,serial=SN1,num_queues=2,queue_size=64,id=d0"]

    @pytest.fixture
    def invalid_options(self):
        return [("readonly=on", "path is required"), ("path={path},queue_size=100", "queue_size=100"),
                ("path={path},colour=red", "'colour'")]

    @pytest.fixture
    def failing_options(self):
        return ["path={missing}"]

    @pytest.fixture
    def request_samples(self):
        # virtio-blk request headers (type, reserved, sector): read, write, flush and get-id at
        # sectors the 1 MiB image has, so that hostile chains reach the data path.
        return [struct.pack("<IIQ", kind, 0, sector) for kind in (0, 1, 4, 8) for sector in (0, 1, 2047)]
