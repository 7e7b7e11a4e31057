"""The built-in virtio-rng (plugvm.builtin.rng) against the plugin conformance suite."""

import pytest

from plugvm.builtin import rng
from plugvm.testing.conformance import DeviceConformance
from plugvm.testing.conformance import capabilities as caps


class TestRng(DeviceConformance):
    @pytest.fixture
    def plugin(self):
        return rng

    @pytest.fixture
    def device_type_name(self):
        return "rng"

    @pytest.fixture
    def capabilities(self):
        # Always present and never hot-added: no verb, not removable.
        return caps.DEFAULT - {caps.HOTPLUG, caps.REMOVE}

    @pytest.fixture
    def backend(self, tmp_path):
        source = tmp_path / "entropy"
        source.write_bytes(bytes(range(256)) * 16)
        return {"src": source, "missing": tmp_path / "no-such-source"}

    @pytest.fixture
    def valid_options(self):
        return ["src={src}", "src=/dev/urandom"]

    @pytest.fixture
    def invalid_options(self):
        return [("src={src},colour=red", "'colour'"), ("iommu=maybe", "iommu")]

    @pytest.fixture
    def failing_options(self):
        return ["src={missing}"]
