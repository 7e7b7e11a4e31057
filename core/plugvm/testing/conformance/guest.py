"""GuestTests: for authors with the lab (or a host with hardware KVM). plugvm boots the
Debian test guest with the plugin installed; the device is hot-added over the REST API
(PUT /api/v1/<api_verb> on --api-socket, as any cloud-hypervisor client would), the guest
binds the driver the `guest_driver` fixture names to it, and vm.remove-device takes it
away again: the guest sees it go and vm.info no longer lists it.

The class is marked `lab`: plugvm's pytest plugin runs it in the lab's L1 when this
host's /dev/kvm cannot boot Linux. Declare the `guest` capability to run it."""

from __future__ import annotations

import http.client
import json
import socket

import pytest

from plugvm.testing.conformance import capabilities as caps
from plugvm.testing.conformance.fixtures import substitute

DEVICE_ID = "conformance0"


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def api(path, method: str, verb: str, body=None, timeout: float = 60.0) -> tuple[int, object]:
    """(status, decoded JSON body or None) of one request to plugvm's API socket."""
    connection = _UnixConnection(str(path), timeout)
    try:
        data = None if body is None else json.dumps(body).encode()
        connection.request(method, f"/api/v1/{verb}", body=data,
                           headers={"Content-Type": "application/json", "Content-Length": str(len(data or b""))})
        response = connection.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw.strip() else None
    finally:
        connection.close()


def until(guest, test: str, seconds: float = 20) -> bool:
    """Whether the shell test `test` holds in the guest within `seconds` (polled every 0.1 s)."""
    loops = int(seconds * 10)
    status, _ = guest.console.run_status(f"i=0; until {test}; do i=$((i+1)); [ $i -ge {loops} ] && break; "
                                        f"sleep 0.1; done; {test}", timeout=seconds + 30)
    return status == 0


@pytest.mark.lab
class GuestTests:
    """A real guest binds the device's driver after a hot-add, and lets it go at removal."""

    @pytest.fixture
    def guest_option(self, option_texts, device_type) -> str:
        """The option text hot-added (the first of `valid_options` unless overridden)."""
        if not option_texts:
            pytest.fail(f"device type {device_type.name!r}: GuestTests needs `valid_options` (or `guest_option`)")
        return option_texts[0]

    @pytest.fixture
    def guest_memory(self) -> str:
        return "512M"

    def exercise(self, guest, answer: dict, api_socket) -> None:
        """Override to use the device in the guest once its driver is bound, before it is
        removed (the same boot): `guest.console.run(...)` runs a shell command, `answer`
        is the hot-add's PciDeviceInfo, `api(api_socket, ...)` calls the API again."""

    def test_a_real_guest_binds_the_hot_added_device_and_lets_it_go(self, device_type, guest_option, guest_driver,
                                                                     capabilities, launch_guest, guest_memory,
                                                                     tmp_path, backend):
        caps.require(capabilities, caps.GUEST, device_type.name)
        caps.require(capabilities, caps.HOTPLUG, device_type.name)
        name = repr(device_type.name)
        sock = tmp_path / "api.sock"
        guest = launch_guest("plugvm", cpus=1, memory=guest_memory,
                             extra=["--console", "null", "--api-socket", str(sock)])
        body = {**device_type.parse(substitute(guest_option, backend)).to_json(), "id": DEVICE_ID}
        status, answer = api(sock, "PUT", device_type.api_verb, body)
        assert status == 200, f"device {name}: {device_type.api_verb} {body!r} answered {status}: {answer!r}"
        assert isinstance(answer, dict) and answer.get("id") == DEVICE_ID and "bdf" in answer, (
            f"device {name}: {device_type.api_verb} answered {answer!r}, not a PciDeviceInfo with id and bdf")
        bdf = answer["bdf"]
        sysfs = f"/sys/bus/pci/devices/{bdf}"
        # The virtio-pci transport binds first; the device's own driver then binds its virtio device.
        bound = f"[ \"$(basename \"$(readlink {sysfs}/virtio*/driver)\")\" = {guest_driver} ]"
        assert until(guest, bound, 20), (
            f"device {name}: the guest did not bind {guest_driver!r} to {bdf} within 20 s (it has: "
            f"{guest.console.run(f'ls -l {sysfs}/virtio*/driver {sysfs}/driver 2>&1; true', check=False)})")

        self.exercise(guest, answer, sock)

        status, answer = api(sock, "PUT", "vm.remove-device", {"id": DEVICE_ID})
        assert status == 204, f"device {name}: vm.remove-device answered {status}: {answer!r}"
        assert until(guest, f"[ ! -e {sysfs} ]", 20), f"device {name}: {bdf} is still in the guest 20 s after removal"
        status, info = api(sock, "GET", "vm.info")
        assert status == 200 and DEVICE_ID not in (info.get("device_tree") or {}), (
            f"device {name}: vm.info still lists {DEVICE_ID} after the guest ejected it")
        assert guest.poweroff() == 0
