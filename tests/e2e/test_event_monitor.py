"""--event-monitor on the Debian guest, in the lab: a hot-add and a guest-ejected removal
report device-added and device-removed with the id, a guest reboot rebooting/rebooted,
in cloud-hypervisor's stream format."""

import json
import time

import pytest
from api_clients import remote

from plugvm.builtin.event_monitor import read_events

pytestmark = pytest.mark.lab
MiB = 1 << 20


def events(path):
    """The events written so far: ch's stream of pretty-printed objects, blank-line separated."""
    return read_events(path.read_text())


def wait_for(path, name, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        hits = [e for e in events(path) if e["event"] == name]
        if hits:
            return hits
        time.sleep(0.1)
    raise AssertionError(f"no {name!r} event in {seconds} s: {[e['event'] for e in events(path)]}")


def test_hotplug_and_reboot_are_reported_to_the_event_monitor(launch_guest, tmp_path):
    api, monitor = tmp_path / "api.sock", tmp_path / "events.json"
    disk = tmp_path / "hot.img"
    disk.write_bytes(bytes(8 * MiB))
    guest = launch_guest("plugvm", extra=["--console", "null", "--api-socket", str(api),
                                          "--event-monitor", f"path={monitor}"])
    assert [e["event"] for e in events(monitor)][:3] == ["starting", "booting", "booted"]

    added = remote(api, "add-disk", f"path={disk},id=watched")
    assert added.returncode == 0, added.stderr
    bdf = json.loads(added.stdout)["bdf"]
    [event] = wait_for(monitor, "device-added")
    assert (event["source"], event["properties"]) == ("vm", {"id": "watched", "bdf": bdf})
    assert guest.console.run_status("i=0; until [ -e /sys/block/vda ]; do i=$((i+1)); [ $i -ge 100 ] && "
                                    "break; sleep 0.1; done; [ -e /sys/block/vda ]", timeout=40)[0] == 0

    assert remote(api, "remove-device", "watched").returncode == 0
    [event] = wait_for(monitor, "device-removed")     # only once the guest has ejected it
    assert event["properties"] == {"id": "watched", "bdf": bdf}

    guest.console.send("reboot -f\n")
    guest.wait_ready(300)
    wait_for(monitor, "rebooted")
    names = [e["event"] for e in events(monitor)]
    at = names.index("rebooting")
    assert names[at:at + 4] == ["rebooting", "booting", "booted", "rebooted"], names
    assert all(set(e) == {"timestamp", "source", "event", "properties"} for e in events(monitor))
    stamps = [e["timestamp"]["secs"] + e["timestamp"]["nanos"] / 1e9 for e in events(monitor)]
    assert stamps == sorted(stamps)
    assert guest.poweroff() == 0
    assert [e["event"] for e in events(monitor)][-2:] == ["shutdown", "shutdown"]   # the VM's, then the VMM's
