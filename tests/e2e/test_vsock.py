"""Hybrid vsock on the Debian guest, in the lab: cloud-hypervisor's test_virtio_vsock
(cold) and test_virtio_vsock_hotplug (notes §4), guest → host, 1 MiB each way, 32
connections at once, a host reader that stops while the guest writes 64 MiB (the
VMM's RSS stays bounded), and bad input that closes one stream or is refused."""

import hashlib
import json
import os
import re
import socket
import threading
import time

import pytest
from api_clients import curl, remote

pytestmark = pytest.mark.lab
KiB, MiB = 1 << 10, 1 << 20


def connect(path, port, seconds=20):
    """A host stream to guest `port` through plugvm's socket: `CONNECT port`, then `OK n`.
    Retried while the guest does not listen yet (plugvm closes such a stream)."""
    deadline = time.monotonic() + seconds
    while True:
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(30)
        s.connect(str(path))
        s.sendall(f"CONNECT {port}\n".encode())
        line = b""
        while not line.endswith(b"\n"):
            chunk = s.recv(1)
            if not chunk:
                break
            line += chunk
        if re.fullmatch(rb"OK \d+\n", line):
            return s
        s.close()
        assert time.monotonic() < deadline, f"the guest never accepted port {port} (last answer {line!r})"
        time.sleep(0.2)


def receive_all(s) -> bytes:
    parts = []
    while chunk := s.recv(1 << 16):
        parts.append(chunk)
    return b"".join(parts)


def until(guest, test, seconds=20):
    loops = int(seconds * 10)
    return guest.console.run_status(f"i=0; until {test}; do i=$((i+1)); [ $i -ge {loops} ] && break; sleep 0.1; "
                                    f"done; {test}", timeout=seconds + 30)[0]


def hello(guest, path):
    """cloud-hypervisor's check: the guest listens on 16, the host sends HelloWorld!."""
    guest.console.run("rm -f /tmp/vsock_log")
    guest.console.send("vsockcat listen 16 > /tmp/vsock_log </dev/null &\n")
    s = connect(path, 16)
    s.sendall(b"HelloWorld!")
    s.close()
    assert until(guest, "grep -q HelloWorld! /tmp/vsock_log") == 0


def rss(pid) -> int:
    return int(re.search(r"^VmRSS:\s+(\d+) kB", open(f"/proc/{pid}/status").read(), re.M)[1]) * KiB


def test_cold_vsock_both_ways_and_under_load(launch_guest, tmp_path):
    path = tmp_path / "vsock.sock"
    api = tmp_path / "api.sock"
    guest = launch_guest("plugvm", memory="512M", extra=["--api-socket", str(api),
                                                         "--vsock", f"cid=3,socket={path}"])
    run, pid = guest.console.run, guest.process.pid
    hello(guest, path)

    # Guest → host: CID 2 port 1234 is <socket>_1234; 1 MiB with its sha256.
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(f"{path}_1234")
    listener.listen(8)
    run("head -c 1048576 /dev/urandom > /tmp/up")
    guest.console.send("vsockcat connect 2 1234 < /tmp/up > /dev/null &\n")
    peer, _ = listener.accept()
    peer.settimeout(60)
    data = receive_all(peer)
    peer.close()
    assert len(data) == MiB and hashlib.sha256(data).hexdigest() == run("sha256sum /tmp/up | cut -d' ' -f1")

    # Host → guest and back, 1 MiB, through the guest's echo server.
    guest.console.send("vsockcat echo 5000 </dev/null >/dev/null 2>&1 &\n")
    payload = os.urandom(MiB)
    s = connect(path, 5000)
    sender = threading.Thread(target=lambda: (s.sendall(payload), s.shutdown(socket.SHUT_WR)))
    sender.start()
    echoed = receive_all(s)
    sender.join()
    s.close()
    assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()

    # 32 connections at once, each its own 64 KiB.
    results = {}

    def one(i):
        c = connect(path, 5000)
        mine = os.urandom(64 * KiB)
        t = threading.Thread(target=lambda: (c.sendall(mine), c.shutdown(socket.SHUT_WR)))
        t.start()
        results[i] = receive_all(c) == mine
        t.join()
        c.close()
    threads = [threading.Thread(target=one, args=(i,)) for i in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert results == {i: True for i in range(32)}

    # A host peer that stops reading while the guest writes 64 MiB: the VMM holds a
    # bounded amount (the guest waits for credit), and the transfer ends once it reads.
    slow = socket.socket(socket.AF_UNIX)
    slow.bind(f"{path}_6000")
    slow.listen(1)
    guest.console.send("head -c 67108864 /dev/zero | vsockcat connect 2 6000 > /dev/null; echo slow-done > /tmp/slow &\n")
    peer, _ = slow.accept()
    before = rss(pid)
    time.sleep(5)
    grown = rss(pid) - before
    assert grown < 16 * MiB, grown
    peer.settimeout(120)
    total = 0
    while chunk := peer.recv(1 << 20):
        total += len(chunk)
    peer.close()
    assert total == 64 * MiB
    assert until(guest, "[ -e /tmp/slow ]") == 0

    # Bad input closes one stream, and the VMM goes on.
    bad = socket.socket(socket.AF_UNIX)
    bad.connect(str(path))
    bad.sendall(b"HELLO there\n")
    bad.settimeout(10)
    assert bad.recv(16) == b""
    bad.close()
    nobody = socket.socket(socket.AF_UNIX)
    nobody.connect(str(path))
    nobody.sendall(b"CONNECT 4444\n")
    nobody.settimeout(10)
    assert nobody.recv(16) == b""                   # nothing listens on 4444 in the guest
    nobody.close()
    # Guest → a host port nobody listens on: the guest gets a reset.
    status, out = guest.console.run_status("vsockcat connect 2 7777 < /dev/null")
    assert status != 0 and "reset" in out.lower(), out
    assert curl(api, "GET", "vm.info")[0] == 200

    guest.console.send("reboot -f\n")
    guest.wait_ready(300)
    assert path.exists()
    hello(guest, path)
    assert guest.poweroff() == 0
    listener.close()
    slow.close()
    assert not path.exists()                        # removed when the VM went


def test_vsock_hotplug_as_cloud_hypervisor_tests_it(launch_guest, tmp_path):
    path = tmp_path / "vsock.sock"
    api = tmp_path / "api.sock"
    guest = launch_guest("plugvm", memory="512M", extra=["--api-socket", str(api)])
    # Refused, nothing attached: a socket path that exists, a CID below 3.
    taken = tmp_path / "taken.sock"
    taken.write_text("")
    status, body = curl(api, "PUT", "vm.add-vsock", json.dumps({"cid": 3, "socket": str(taken)}))
    assert status == 400 and str(taken) in body, body
    status, body = curl(api, "PUT", "vm.add-vsock", json.dumps({"cid": 2, "socket": str(path)}))
    assert status == 400 and "cid" in body, body
    assert not path.exists()
    added = remote(api, "add-vsock", f"cid=3,socket={path},id=test0")
    assert added.returncode == 0, added.stderr
    assert json.loads(added.stdout)["id"] == "test0" and path.exists()
    second = remote(api, "add-vsock", f"cid=4,socket={tmp_path / 'second.sock'},id=test1")
    assert second.returncode != 0                   # one vsock per VM
    hello(guest, path)
    guest.console.send("reboot -f\n")
    guest.wait_ready(300)
    hello(guest, path)
    status, body = curl(api, "PUT", "vm.remove-device", json.dumps({"id": "test0"}), headers=["Prefer: wait=30"])
    assert status == 204, body
    assert not path.exists()                        # unlinked once the guest let go
    assert guest.poweroff() == 0
