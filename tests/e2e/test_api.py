"""The Debian guest driven through the REST API, in the lab: with plugvm-remote (ch-remote's
syntax) and with curl, a client nobody here wrote."""

import json
import sys
import time

import pytest
from api_clients import curl, remote

from plugvm.testing.guest import Guest

pytestmark = pytest.mark.lab


def uptime(guest) -> float:
    return float(guest.console.run("cut -d' ' -f1 /proc/uptime"))


def test_ping_info_pause_resume_reboot_power_button(launch_guest, tmp_path):
    socket = tmp_path / "api.sock"
    guest = launch_guest("plugvm", cpus=2, memory="512M", extra=["--api-socket", str(socket)])
    ping = remote(socket, "ping")
    assert ping.returncode == 0 and json.loads(ping.stdout)["version"]
    status, body = curl(socket, "GET", "vmm.ping")
    assert status == 200 and json.loads(body)["pid"] == guest.process.pid
    info = json.loads(remote(socket, "info").stdout)
    assert info["state"] == "Running" and info["config"]["cpus"]["boot_vcpus"] == 2
    assert info["device_tree"]["_virtio-pci-__rng"]["pci_bdf"] == "0000:00:01.0"
    status, body = curl(socket, "GET", "vm.info")
    assert status == 200 and json.loads(body)["state"] == "Running"

    # Paused, the guest runs nothing and its clock stands still.
    before, host_before = uptime(guest), time.monotonic()
    assert remote(socket, "pause").returncode == 0
    assert json.loads(remote(socket, "info").stdout)["state"] == "Paused"
    time.sleep(10)
    assert remote(socket, "resume").returncode == 0
    after, host_after = uptime(guest), time.monotonic()
    print(f"host {host_after - host_before:.1f} s, guest {after - before:.1f} s across a 10 s pause")
    assert after - before < (host_after - host_before) - 7

    status, body = curl(socket, "PUT", "vm.reboot")
    assert (status, body) == (204, "")
    guest.wait_ready(300)
    assert guest.console.run("cat /sys/devices/system/cpu/online") == "0-1"

    # The power button: the guest's ACPI handles it and powers off; plugvm exits 0.
    assert guest.console.run("pidof acpid")        # the guest's power-button handler is up
    assert remote(socket, "power-button").returncode == 0
    assert guest.wait_exit(180) == 0


def test_create_and_boot_from_json_then_shutdown_and_delete(guest_image, tmp_path):
    socket = tmp_path / "api.sock"
    guest = Guest([sys.executable, "-m", "plugvm.cli", "--api-socket", str(socket)], guest_image, tmp_path / "logs")
    try:
        deadline = time.monotonic() + 60
        while not socket.exists():
            assert time.monotonic() < deadline and guest.process.poll() is None
            time.sleep(0.1)
        config = tmp_path / "vm.json"
        config.write_text(json.dumps({
            "payload": {"kernel": str(guest_image.kernel), "initramfs": str(guest_image.initramfs),
                        "cmdline": guest_image.quiet().cmdline},
            "cpus": {"boot_vcpus": 1, "max_vcpus": 2}, "memory": {"size": 512 << 20},
            "serial": {"mode": "Tty"}, "console": {"mode": "Off"}}))
        created = remote(socket, "create", str(config))
        assert created.returncode == 0, created.stderr
        status, body = curl(socket, "PUT", "vm.boot")
        assert status == 204
        guest.wait_ready(300)
        assert guest.console.run("cat /sys/devices/system/cpu/possible") == "0-1"
        assert remote(socket, "shutdown").returncode == 0
        status, body = curl(socket, "GET", "vm.info")
        assert status == 200 and json.loads(body)["state"] == "Shutdown"
        assert remote(socket, "delete").returncode == 0
        status, body = curl(socket, "GET", "vm.info")
        assert status == 404 and isinstance(json.loads(body), list)
        failed = remote(socket, "boot")
        assert failed.returncode == 1 and "NotFound" in failed.stderr
        assert remote(socket, "shutdown-vmm").returncode == 0
        assert guest.wait_exit(60) == 0
    finally:
        guest.kill()
