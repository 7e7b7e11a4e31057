"""Memory hotplug on the Debian guest, in the lab: cloud-hypervisor's test_memory_hotplug
(ACPI, without its balloon steps), test_virtio_mem and test_resize (notes §4), with
the host's side checked too: vm.info, and the VMM's RSS falling when virtio-mem
unplugs memory the guest had used; and bad resizes that change nothing."""

import json
import re
import time

import pytest
from api_clients import curl, remote

pytestmark = pytest.mark.lab
KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


def mem_total(guest) -> int:
    """MemTotal in kB, as cloud-hypervisor's get_total_memory."""
    return int(guest.console.run("grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2"))


def until_mem(guest, low, high=None, seconds=10):
    """Wait until low < MemTotal (< high); the last MemTotal."""
    deadline = time.monotonic() + seconds
    while True:
        total = mem_total(guest)
        if total > low and (high is None or total < high):
            return total
        if time.monotonic() > deadline:
            return total
        time.sleep(0.2)


def reboot(guest):
    guest.console.send("reboot -f\n")
    guest.wait_ready(300)


def info(api):
    status, body = curl(api, "GET", "vm.info")
    assert status == 200, body
    return json.loads(body)


def rss(pid) -> int:
    """The VMM's resident bytes (VmRSS)."""
    return int(re.search(r"^VmRSS:\s+(\d+) kB", open(f"/proc/{pid}/status").read(), re.M)[1]) * KiB


def test_acpi_memory_hotplug_as_cloud_hypervisor_tests_it(launch_guest, tmp_path):
    api = tmp_path / "api.sock"
    guest = launch_guest("plugvm", memory="512M,hotplug_size=2G", extra=["--api-socket", str(api)])
    assert mem_total(guest) > 480000
    resized = remote(api, "resize", "--memory", "1G")
    assert resized.returncode == 0, resized.stderr
    assert until_mem(guest, 960000) > 960000
    assert remote(api, "resize", "--memory", "2G").returncode == 0
    assert until_mem(guest, 1920000) > 1920000
    # The guest found the two DIMMs of \_SB_.MHPC's eight, enabled (_STA 15).
    assert guest.console.run("ls /sys/bus/acpi/devices | grep -c PNP0C80") == "8"
    assert guest.console.run("cat /sys/bus/acpi/devices/PNP0C80:0[0-2]/status | tr '\\n' ' '").strip() == "15 15 0"
    # Shrinking is recorded for the next boot: the guest keeps what it has until then.
    assert remote(api, "resize", "--memory", "1G").returncode == 0
    time.sleep(1)
    assert mem_total(guest) > 1920000
    vm = info(api)
    assert vm["memory_actual_size"] == 2 * GiB and vm["config"]["memory"]["size"] == GiB
    reboot(guest)
    assert 960000 < mem_total(guest) < 1920000
    assert info(api)["memory_actual_size"] == GiB
    assert guest.poweroff() == 0


def test_virtio_mem_grows_and_shrinks_live_and_gives_memory_back(launch_guest, tmp_path):
    api = tmp_path / "api.sock"
    guest = launch_guest("plugvm", memory="512M,hotplug_method=virtio-mem,hotplug_size=2G",
                         extra=["--api-socket", str(api)])
    pid, run = guest.process.pid, guest.console.run
    assert mem_total(guest) > 480000
    assert remote(api, "resize", "--memory", "1G").returncode == 0
    assert until_mem(guest, 960000) > 960000
    # With a wait the answer comes once the guest has plugged it all.
    status, body = curl(api, "PUT", "vm.resize", json.dumps({"desired_ram": 2 * GiB}), headers=["Prefer: wait=30"])
    assert status == 204, body
    assert until_mem(guest, 1920000) > 1920000
    assert info(api)["memory_actual_size"] == 2 * GiB
    # The guest uses nearly all its memory, then frees it: the pages stay resident in the host.
    available = int(run("grep MemAvailable /proc/meminfo | tr -s ' ' | cut -d' ' -f2")) * KiB
    fill = (available - 128 * MiB) // MiB
    run(f"mkdir -p /fill && mount -t tmpfs -o size={fill}M tmpfs /fill && "
        f"dd if=/dev/zero of=/fill/f bs=1M count={fill} 2>/dev/null; rm /fill/f; umount /fill", timeout=300)
    before = rss(pid)
    assert before > 2 * GiB - 256 * MiB, before
    # Live shrink to 1G: the guest unplugs 1 GiB, which the host drops. The guest had
    # touched at most all of it, so a fall of 80% of the GiB is at least 80% of what
    # it had touched there.
    assert remote(api, "resize", "--memory", "1G").returncode == 0
    assert 960000 < until_mem(guest, 960000, 1920000, seconds=60) < 1920000
    time.sleep(1)
    after = rss(pid)
    assert before - after >= 0.8 * GiB, (before, after)
    assert info(api)["memory_actual_size"] == GiB
    assert info(api)["config"]["memory"]["hotplugged_size"] == 512 * MiB
    # A reboot gives the guest what it had.
    reboot(guest)
    assert 960000 < until_mem(guest, 960000, 1920000) < 1920000
    assert remote(api, "resize", "--memory", "512M").returncode == 0
    assert 480000 < until_mem(guest, 480000, 960000, seconds=30) < 960000
    assert guest.poweroff() == 0


def test_one_resize_for_cpus_and_memory_and_bad_resizes_change_nothing(launch_guest, tmp_path):
    api = tmp_path / "api.sock"
    guest = launch_guest("plugvm", cpus="boot=2,max=4", memory="512M,hotplug_size=2G",
                         extra=["--api-socket", str(api)])
    run = guest.console.run
    status, body = curl(api, "PUT", "vm.resize", json.dumps({"desired_vcpus": 4, "desired_ram": GiB}))
    assert status == 204, body
    assert until_mem(guest, 960000) > 960000
    for cpu in (2, 3):
        deadline = time.monotonic() + 10
        while run(f"[ -e /sys/devices/system/cpu/cpu{cpu}/online ] && echo y || echo n") != "y":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        run(f"echo 1 > /sys/devices/system/cpu/cpu{cpu}/online")
    assert run("grep -c ^processor /proc/cpuinfo") == "4"

    def unchanged():
        vm = info(api)
        return (vm["memory_actual_size"], vm["config"]["memory"]["size"], vm["config"]["cpus"]["boot_vcpus"],
                mem_total(guest), run("cat /sys/devices/system/cpu/present"))
    state = unchanged()
    bad = [({"desired_ram": GiB + 64 * MiB}, "desired_ram", "128 MiB"),
           ({"desired_ram": 4 * GiB}, "desired_ram", "hotplug window"),
           ({"desired_ram": -1}, "desired_ram", "out of range"),
           ({"desired_ram": GiB + 100}, "desired_ram", "4096"),
           # one part refused: neither is applied (the CPUs stay 4)
           ({"desired_vcpus": 3, "desired_ram": GiB + 64 * MiB}, "desired_ram", "128 MiB"),
           ({"desired_vcpus": 5, "desired_ram": 2 * GiB}, "desired_vcpus", "max_vcpus")]
    for body_json, field, words in bad:
        status, body = curl(api, "PUT", "vm.resize", json.dumps(body_json))
        assert 400 <= status < 500 and field in body and words in body, (body_json, status, body)
    assert unchanged() == state
    # Eight DIMMs a boot: seven more 128M adds, then the ninth is refused.
    for i in range(1, 8):
        assert remote(api, "resize", "--memory", f"{1024 + 128 * i}M").returncode == 0
    ninth = remote(api, "resize", "--memory", f"{1024 + 128 * 8}M")
    assert ninth.returncode == 1 and "slots" in ninth.stderr, ninth.stderr
    eight = int((1024 + 128 * 7) * 1024 * 0.915)          # ch's 960000 kB for 1 GiB, in proportion
    assert until_mem(guest, eight) > eight
    assert info(api)["memory_actual_size"] == (1024 + 128 * 7) * MiB
    assert guest.poweroff() == 0
