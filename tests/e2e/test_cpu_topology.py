"""`--cpus topology=` as the Debian guest sees it, in the lab: boot CPUs and hot-added
ones get the cores, packages and thread siblings the topology says."""

import pytest
from api_clients import remote

pytestmark = pytest.mark.lab


def topology(guest, cpu):
    """(core_id, physical_package_id, thread_siblings_list) of guest CPU `cpu`."""
    files = ("core_id", "physical_package_id", "thread_siblings_list")
    out = guest.console.run(" ".join(["cat", *(f"/sys/devices/system/cpu/cpu{cpu}/topology/{f}" for f in files)]))
    core, package, siblings = out.split()
    return int(core), int(package), siblings


def test_two_threads_per_core_boot_and_hot_added(launch_guest, tmp_path):
    api = tmp_path / "api.sock"
    guest = launch_guest("plugvm", cpus="boot=2,max=4,topology=2:2:1:1", memory="512M",
                         extra=["--api-socket", str(api)])
    # CPUs 0 and 1 are the two threads of core 0.
    assert [topology(guest, cpu) for cpu in (0, 1)] == [(0, 0, "0-1"), (0, 0, "0-1")]
    resized = remote(api, "--wait", "30", "resize", "--cpus", "4")
    assert resized.returncode == 0, resized.stderr
    assert guest.console.run_status("echo 1 > /sys/devices/system/cpu/cpu2/online && "
                                    "echo 1 > /sys/devices/system/cpu/cpu3/online")[0] == 0
    assert guest.console.run("cat /sys/devices/system/cpu/online") == "0-3"
    # The hot-added CPUs 2 and 3 are core 1's threads, siblings of each other only.
    assert [topology(guest, cpu) for cpu in range(4)] == [(0, 0, "0-1"), (0, 0, "0-1"), (1, 0, "2-3"),
                                                         (1, 0, "2-3")]
    assert guest.poweroff() == 0
