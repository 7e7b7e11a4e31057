"""CPU hotplug on the Debian guest, in the lab: the hotplug guide's walkthrough and
cloud-hypervisor's test_cpu_hotplug (notes §4), and a resize loop as orchestrators
drive it, retrying 429s."""

import json
import time

import pytest
from api_clients import curl, remote

from plugvm.testing.threads import vcpu_threads

pytestmark = pytest.mark.lab


def online(guest):
    return int(guest.console.run("grep -c ^processor /proc/cpuinfo"))


def until(guest, test, seconds=10):
    loops = int(seconds * 10)
    return guest.console.run_status(f"i=0; until {test}; do i=$((i+1)); [ $i -ge {loops} ] && break; sleep 0.1; "
                                    f"done; {test}", timeout=seconds + 30)[0]


def test_cpu_hotplug_as_the_guide_and_cloud_hypervisor_test_it(launch_guest, tmp_path):
    api = tmp_path / "api.sock"
    guest = launch_guest("plugvm", cpus="boot=2,max=4", memory="512M", extra=["--api-socket", str(api)])
    pid = guest.process.pid
    assert online(guest) == 2 and vcpu_threads(pid) == ["vcpu0", "vcpu1"]
    # No --memory hotplug_size: its memory cannot be resized, and a refused part refuses all.
    memtotal = guest.console.run("grep MemTotal /proc/meminfo")
    status, body = curl(api, "PUT", "vm.resize", json.dumps({"desired_vcpus": 3, "desired_ram": 1 << 30}))
    assert status == 400 and "desired_ram" in body and "hotplug_size" in body, body
    assert guest.console.run("grep MemTotal /proc/meminfo") == memtotal
    assert json.loads(remote(api, "info").stdout)["memory_actual_size"] == 512 << 20
    resized = remote(api, "--wait", "30", "resize", "--cpus", "4")
    assert resized.returncode == 0, resized.stderr
    # --wait: the guest has evaluated the new CPUs' _STA, so they exist, offline.
    assert guest.console.run("cat /sys/devices/system/cpu/present") == "0-3"
    assert guest.console.run("cat /sys/devices/system/cpu/online") == "0-1"
    assert guest.console.run_status("echo 1 > /sys/devices/system/cpu/cpu2/online && "
                                    "echo 1 > /sys/devices/system/cpu/cpu3/online")[0] == 0
    assert online(guest) == 4 and vcpu_threads(pid) == ["vcpu0", "vcpu1", "vcpu2", "vcpu3"]
    assert json.loads(remote(api, "info").stdout)["config"]["cpus"]["boot_vcpus"] == 4

    guest.console.send("reboot -f\n")
    guest.wait_ready(300)
    assert online(guest) == 4                       # all of them boot online
    # Down, with no command in the guest: it offlines and ejects them itself.
    status, body = curl(api, "PUT", "vm.resize", json.dumps({"desired_vcpus": 2}), headers=["Prefer: wait=30"])
    assert status == 204, body
    assert until(guest, "[ $(grep -c ^processor /proc/cpuinfo) -eq 2 ]") == 0
    assert vcpu_threads(pid) == ["vcpu0", "vcpu1"]
    guest.console.send("reboot -f\n")
    guest.wait_ready(300)
    assert online(guest) == 2
    assert guest.poweroff() == 0


def test_a_resize_loop_with_429_retries_never_hangs(launch_guest, tmp_path):
    api = tmp_path / "api.sock"
    guest = launch_guest("plugvm", cpus="boot=1,max=3", memory="512M", extra=["--api-socket", str(api)])
    pid = guest.process.pid
    answers = []
    for round in range(20):
        desired = 3 if round % 2 == 0 else 1
        deadline = time.monotonic() + 15
        while True:                     # as orchestrators do (Kata): retry a 429 for a while
            status, body = curl(api, "PUT", "vm.resize", json.dumps({"desired_vcpus": desired}))
            answers.append(status)
            if status != 429 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert status == 204, (round, body)
        if desired == 3:
            for cpu in (1, 2):
                assert until(guest, f"[ -e /sys/devices/system/cpu/cpu{cpu}/online ]") == 0
                guest.console.run(f"echo 1 > /sys/devices/system/cpu/cpu{cpu}/online")
            assert online(guest) == 3
        else:
            assert until(guest, "[ $(grep -c ^processor /proc/cpuinfo) -eq 1 ]") == 0
        # The threads follow once the guest ejected (removal) or at once (add).
        deadline = time.monotonic() + 15
        while len(vcpu_threads(pid)) != desired and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(vcpu_threads(pid)) == desired, round
    assert set(answers) <= {204, 429}
    assert guest.console.run("echo alive") == "alive"
    assert guest.poweroff() == 0
