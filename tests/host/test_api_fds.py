"""File descriptors over the API socket (SCM_RIGHTS), as Kata sends a tap fd with each
vm.add-net: in one sendmsg with the request, on a connection of its own. Every fd that
comes with a request is accounted for: kept by the VM config when the request put it
there, closed otherwise (a refused request, more fds than it uses, a lost connection)."""

import fcntl
import json
import os
import re
import socket
import struct
import time

import pytest

from test_api import Plugvm, kernel, vm_body  # noqa: F401 (kernel is a fixture)

TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI, IFF_VNET_HDR = 0x0002, 0x1000, 0x4000

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/dev/net/tun"),
                                reason="a tap needs root and /dev/net/tun, as CI has")


def open_tap(name: str) -> int:
    """A tap opened as Kata opens one (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR)."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
    return fd


def send(path, verb: str, body, fds=(), close_early=False):
    """(status, reason, decoded body) of one request sent as Kata's raw vm.add-net is: the
    whole request in one sendmsg carrying `fds`, on a new connection."""
    data = b"" if body is None else json.dumps(body).encode()
    request = (f"PUT /api/v1/{verb} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
               f"Content-Length: {len(data)}\r\nContent-Type: application/json\r\n\r\n").encode() + data
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.connect(str(path))
        if close_early:                 # the headers and fds, never the body
            socket.send_fds(s, [request[:len(request) - len(data)]], list(fds))
            return None
        socket.send_fds(s, [request], list(fds))
        s.settimeout(30)
        reply = b""
        while b"\r\n\r\n" not in reply:
            reply += s.recv(65536)
        head, _, rest = reply.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        _, status, reason = (lines[0].split(" ", 2) + [""])[:3]
        headers = dict(line.split(": ", 1) for line in lines[1:])
        length = int(headers.get("Content-Length", 0))
        while len(rest) < length:
            rest += s.recv(65536)
        return int(status), reason, json.loads(rest) if rest else None


def open_fds(pid: int) -> dict[int, str]:
    found = {}
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue
        # A thread that starts names itself through its comm file, open for an instant
        # (plugvm.thread_names): not an fd any request brought.
        if not re.fullmatch(r"/proc/\d+/task/\d+/comm", target):
            found[int(name)] = target
    return found


def tun_fds(pid: int) -> int:
    return sum(target == "/dev/net/tun" for target in open_fds(pid).values())


def settled(read, expected, seconds=5.0):
    """read() once it equals `expected` (the server closes a request's fds as it answers)."""
    deadline = time.monotonic() + seconds
    while (value := read()) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


@pytest.fixture
def vmm(tmp_path, kernel):  # noqa: F811
    p = Plugvm(tmp_path)
    assert p.put("vm.create", vm_body(kernel, tmp_path)).status_code == 204
    yield p
    p.close()


def test_a_tap_fd_sent_with_vm_add_net_is_the_devices_through_boot_and_removal(vmm, tmp_path):
    pid = vmm.proc.pid
    tap = open_tap("kata0")
    try:
        status, _, body = send(vmm.socket, "vm.add-net", {"mac": "52:54:00:12:34:56", "id": "n0"}, [tap])
        assert (status, body) == (204, None)                      # a cold add, as ch answers it
        assert settled(lambda: tun_fds(pid), 1) == 1               # the VM config holds it
        (net,) = vmm.get("vm.info").json()["config"]["net"]
        assert len(net["fds"]) == 1 and net["id"] == "n0"
        assert vmm.put("vm.boot").status_code == 204
        assert settled(lambda: tun_fds(pid), 2) == 2               # and the device its own dup
        assert "tap opened" in vmm.log.read_text() and "kata0" in vmm.log.read_text()
        assert vmm.put("vm.reboot").status_code == 204             # a new device from the same fd
        assert settled(lambda: tun_fds(pid), 2) == 2
        assert vmm.put("vm.shutdown").status_code == 204
        assert settled(lambda: tun_fds(pid), 1) == 1
        assert vmm.put("vm.delete").status_code == 204             # the config goes, and its fd
        assert settled(lambda: tun_fds(pid), 0) == 0
    finally:
        os.close(tap)


def test_a_hot_added_tap_fd_answers_a_pci_device_info(vmm, tmp_path):
    pid = vmm.proc.pid
    assert vmm.put("vm.boot").status_code == 204
    tap = open_tap("kata1")
    try:
        status, _, body = send(vmm.socket, "vm.add-net", {"mac": "52:54:00:12:34:57"}, [tap])
        assert status == 200 and body["id"] == "_net0" and len(body["bdf"].split(":")[2]) == 4
        assert settled(lambda: tun_fds(pid), 2) == 2
    finally:
        os.close(tap)


@pytest.mark.parametrize("verb, body, sent, message", [
    ("vm.add-net", {"mac": "52:54:00:12:34:58"}, 3, "fds=[{}, {}, {}] is not one tap fd"),
    ("vm.add-disk", {"path": "/dev/null"}, 1, "a disk device takes none"),
    ("vm.add-net", {"mac": "nope"}, 1, "mac='nope' is not a MAC address"),
    ("vm.add-net", {"tap": "t0"}, 1, "tap='t0' and fds are exclusive"),
])
def test_fds_of_a_refused_request_are_all_closed(vmm, verb, body, sent, message):
    pid = vmm.proc.pid
    before = open_fds(pid)
    taps = [open_tap(f"kref{i}") for i in range(sent)]
    try:
        status, _, answer = send(vmm.socket, verb, body, taps)
        assert status == 400, answer
        assert message.split("{")[0] in answer[-1], answer
        assert settled(lambda: open_fds(pid), before) == before
        assert vmm.get("vm.info").json()["config"].get("net") is None
    finally:
        for tap in taps:
            os.close(tap)


def test_a_hot_add_whose_fd_is_no_tap_fails_and_closes_it(vmm):
    pid = vmm.proc.pid
    assert vmm.put("vm.boot").status_code == 204
    before = open_fds(pid)
    read, write = os.pipe()
    try:
        status, _, answer = send(vmm.socket, "vm.add-net", {"mac": "52:54:00:12:34:59"}, [read])
        assert status == 400 and "is not a tap" in answer[-1], answer
        assert settled(lambda: open_fds(pid), before) == before
    finally:
        os.close(read)
        os.close(write)


def test_fds_without_a_request_that_uses_them_are_closed(vmm):
    pid = vmm.proc.pid
    before = open_fds(pid)
    tap = open_tap("kping")
    try:
        # Sent with a request that takes none, and with one whose body never arrives.
        assert send(vmm.socket, "vm.pause", None, [tap])[0] == 500       # not running: ch's InvalidStateTransition
        send(vmm.socket, "vm.add-net", {"mac": "52:54:00:12:34:5a"}, [tap], close_early=True)
        assert settled(lambda: open_fds(pid), before) == before
    finally:
        os.close(tap)


def test_no_fds_where_none_are_sent(vmm):
    # Without fds vm.add-net makes its own tap, and a body's fd numbers are never taken.
    status, _, _ = send(vmm.socket, "vm.add-net", {"mac": "52:54:00:12:34:5b", "fds": [0]})
    assert status == 204
    (net,) = vmm.get("vm.info").json()["config"]["net"]
    assert "fds" not in net


def test_a_request_cannot_bring_more_than_16_fds(vmm):
    # Its head a piece at a time, each piece with 8 fds: the 17th on are closed at once.
    pid = vmm.proc.pid
    before = open_fds(pid)
    read, write = os.pipe()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(str(vmm.socket))
            for piece in (b"PUT /api/v1/vm.pa", b"use HTTP/1.1\r\n", b"Host: localhost\r\n"):
                socket.send_fds(s, [piece], [read] * 8)
                time.sleep(0.2)
            pipes = sum(t.startswith("pipe:") for t in before.values())       # plugvm's own
            held = settled(lambda: sum(t.startswith("pipe:") for t in open_fds(pid).values()) - pipes, 16)
            assert held == 16
            s.sendall(b"Content-Length: 0\r\n\r\n")
            s.settimeout(10)
            assert s.recv(100).startswith(b"HTTP/1.1 ")
        assert settled(lambda: open_fds(pid), before) == before
    finally:
        os.close(read)
        os.close(write)
