"""virtio-pmem (the third-party example plugvm-virtio-pmem) on the Debian guest, in the lab:
cloud-hypervisor's test_pmem_hotplug (notes §4) through plugvm-remote, plus what ch's test
does not look at: the guest's writes through /dev/pmem0 reach the host file."""

import json

import pytest
from api_clients import remote

pytestmark = pytest.mark.lab
MiB = 1 << 20
PATTERN = b"written by the guest through /dev/pmem0!" * 4


def until(guest, test, seconds=10):
    loops = int(seconds * 10)
    return guest.console.run_status(f"i=0; until {test}; do i=$((i+1)); [ $i -ge {loops} ] && break; sleep 0.1; "
                                    f"done; {test}", timeout=seconds + 30)[0]


def test_pmem_hotplug(launch_guest, tmp_path):
    api = tmp_path / "api.sock"
    backing = tmp_path / "pmem.img"
    with open(backing, "wb") as f:
        f.truncate(128 * MiB)
    guest = launch_guest("plugvm", cpus=1, memory="512M", extra=["--console", "null", "--api-socket", str(api)])
    run = guest.console.run
    assert run("[ -e /dev/pmem0 ] || echo absent") == "absent"

    added = remote(api, "add-pmem", f"file={backing},id=test0")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["id"] == "test0"
    assert until(guest, "[ -e /sys/block/pmem0 ]") == 0
    assert run("cat /sys/block/pmem0/size") == str(128 * MiB // 512)
    info = json.loads(remote(api, "info").stdout)
    (resource,) = info["device_tree"]["test0"]["resources"]
    assert resource["MmioAddressRange"]["size"] == 128 * MiB

    # Through the pmem driver to the mapping, then a flush request (fsync on the host).
    guest.console.run(f"printf '{PATTERN.decode()}' > /tmp/p")
    assert guest.console.run_status("dd if=/tmp/p of=/dev/pmem0 bs=512 seek=2048 conv=notrunc,fsync "
                                    "oflag=direct 2>/dev/null; sync")[0] == 0
    with open(backing, "rb") as f:
        f.seek(MiB)
        assert f.read(len(PATTERN)) == PATTERN

    assert remote(api, "remove-device", "test0").returncode == 0
    assert until(guest, "[ ! -e /sys/block/pmem0 ]", 20) == 0
    assert "test0" not in json.dumps(json.loads(remote(api, "info").stdout)["device_tree"])
    assert guest.poweroff() == 0
