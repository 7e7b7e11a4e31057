"""plugvm-virtio-pmem against plugvm's plugin conformance suite (plugvm.testing.conformance):
`pip install plugvm[conformance]`, then pytest this file."""

import struct

import pytest

import plugvm_virtio_pmem
from plugvm.testing import conformance

MiB = 1 << 20


class TestVirtioPmem(conformance.DeviceConformance):
    @pytest.fixture
    def plugin(self):
        return plugvm_virtio_pmem

    @pytest.fixture
    def device_type_name(self):
        return "pmem"

    @pytest.fixture
    def backend(self, tmp_path):
        image = tmp_path / "pmem.img"
        image.write_bytes(bytes(2 * MiB))
        odd = tmp_path / "odd.img"
        odd.write_bytes(bytes(MiB))
        return {"path": image, "dir": tmp_path, "odd": odd, "missing": tmp_path / "missing.img"}

    @pytest.fixture
    def valid_options(self):
        return ["file={path}", "file={path},size=2M,discard_writes=on,id=pm0", "file={dir},size=2M"]

    @pytest.fixture
    def invalid_options(self):
        return [("size=2M", "file is required"), ("file={path},size=3M", "size='3M'"),
                ("file={path},colour=red", "'colour'")]

    @pytest.fixture
    def failing_options(self):
        return ["file={missing}", "file={odd}", "file={dir}"]

    @pytest.fixture
    def request_samples(self):
        return [struct.pack("<I", kind) for kind in (0, 1, 0xFFFFFFFF)]
