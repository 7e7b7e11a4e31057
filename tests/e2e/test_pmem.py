"""virtio-pmem (the third-party example plugvm-virtio-pmem) on the Debian guest, in the lab,
through the conformance suite's GuestTests: hot-added over the API, bound by virtio_pmem,
removed. In the same boot, cloud-hypervisor's test_pmem_hotplug (notes §4): a 128 MiB file
is /dev/pmem0 of 128 MiB, vm.info gives its range; plus what ch's test does not look at:
the guest's writes through /dev/pmem0 reach the host file."""

import pytest

import plugvm_virtio_pmem
from plugvm.testing.conformance import GuestTests
from plugvm.testing.conformance import api as call_api
from plugvm.testing.conformance import capabilities as caps
from plugvm.testing.conformance.guest import until

MiB = 1 << 20
PATTERN = b"written by the guest through /dev/pmem0!" * 4


class TestPmemHotplug(GuestTests):
    @pytest.fixture
    def plugin(self):
        return plugvm_virtio_pmem

    @pytest.fixture
    def device_type_name(self):
        return "pmem"

    @pytest.fixture
    def capabilities(self):
        return caps.ALL

    @pytest.fixture
    def guest_driver(self):
        return "virtio_pmem"

    @pytest.fixture
    def backend(self, tmp_path):
        self.backing = tmp_path / "pmem.img"
        with open(self.backing, "wb") as f:
            f.truncate(128 * MiB)
        return {"path": self.backing}

    @pytest.fixture
    def valid_options(self):
        return ["file={path}"]

    def exercise(self, guest, answer, api_socket):
        run = guest.console.run
        assert until(guest, "[ -e /sys/block/pmem0 ]", 10)
        assert run("cat /sys/block/pmem0/size") == str(128 * MiB // 512)
        status, info = call_api(api_socket, "GET", "vm.info")
        (resource,) = info["device_tree"][answer["id"]]["resources"]
        assert resource["MmioAddressRange"]["size"] == 128 * MiB
        # Through the pmem driver to the mapping, then a flush request (fsync on the host).
        run(f"printf '{PATTERN.decode()}' > /tmp/p")
        assert guest.console.run_status("dd if=/tmp/p of=/dev/pmem0 bs=512 seek=2048 conv=notrunc,fsync "
                                        "oflag=direct 2>/dev/null; sync")[0] == 0
        with open(self.backing, "rb") as f:
            f.seek(MiB)
            assert f.read(len(PATTERN)) == PATTERN
