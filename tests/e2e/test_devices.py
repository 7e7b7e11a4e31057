"""Devices attached at boot from the command line, in the Debian guest on plugvm (lab):
virtio-blk disks, a virtio-net tap, virtio-rng and the virtio-console, at cloud-hypervisor's BDFs."""

import hashlib
import socket
import threading

import pytest

pytestmark = pytest.mark.lab
MiB = 1 << 20
OFFSET = MiB            # past sector 0, which stays read-only on an autodetected raw image (as in ch)
PATTERN = b"plugvm-host-wrote-this-pattern!!" * 16       # 512 bytes


@pytest.fixture
def disks(tmp_path):
    paths = {name: tmp_path / f"{name}.img" for name in ("first", "second", "readonly")}
    for name, path in paths.items():
        with open(path, "wb") as f:
            f.truncate(16 * MiB)
            if name != "second":
                f.seek(OFFSET)
                f.write(PATTERN)
    return paths


def test_disks_read_write_readonly_rng_null_console_and_bdfs(launch_guest, disks):
    readonly_digest = hashlib.sha256(disks["readonly"].read_bytes()).hexdigest()
    guest = launch_guest("plugvm", cpus=1, memory="512M", extra=[
        "--console", "null", "--disk", f"path={disks['first']}", f"path={disks['second']},serial=plugvm-second",
        f"path={disks['readonly']},readonly=on"])
    run = guest.console.run

    def status(cmd):
        return guest.console.run_status(cmd)[0]

    sector = OFFSET // 512
    # The host's pattern, read in the guest from the first disk.
    assert run(f"dd if=/dev/vda bs=512 skip={sector} count=1 2>/dev/null | md5sum | cut -c1-32") \
        == hashlib.md5(PATTERN).hexdigest()
    assert run("cat /sys/block/vda/size") == str(16 * MiB // 512)
    # The guest writes a pattern on the second disk; the host checks it after power-off.
    assert status(f"printf 'guest-wrote-%s' second | dd of=/dev/vdb bs=512 seek={sector} conv=sync,fsync "
                  f"2>/dev/null") == 0
    assert run("cat /sys/block/vdb/serial") == "plugvm-second"
    # The read-only disk: the guest sees it read-only and a write fails.
    assert run("cat /sys/block/vdc/ro") == "1"
    assert status(f"echo x | dd of=/dev/vdc bs=512 seek={sector} conv=sync,fsync 2>/dev/null") != 0
    # virtio-rng backs /dev/hwrng.
    assert run("cat /sys/class/misc/hw_random/rng_current").startswith("virtio_rng")
    assert len(run("dd if=/dev/hwrng bs=32 count=1 2>/dev/null | od -An -tx1 | tr -d ' \\n'")) == 64
    # cloud-hypervisor's BDFs: host bridge 00:00.0, then console, disks, net, rng in creation order.
    devices = run("for d in /sys/bus/pci/devices/*; do echo ${d##*/} $(cat $d/vendor $d/device); done").splitlines()
    assert devices == ["0000:00:00.0 0x8086 0x0d57", "0000:00:01.0 0x1af4 0x1043", "0000:00:02.0 0x1af4 0x1042",
                       "0000:00:03.0 0x1af4 0x1042", "0000:00:04.0 0x1af4 0x1042", "0000:00:05.0 0x1af4 0x1044"]
    # The null console is a working hvc0 whose output goes nowhere.
    assert status("echo discarded > /dev/hvc0") == 0
    assert guest.poweroff() == 0
    with open(disks["second"], "rb") as f:
        f.seek(OFFSET)
        assert f.read(512) == b"guest-wrote-second".ljust(512, b"\0")
    assert hashlib.sha256(disks["readonly"].read_bytes()).hexdigest() == readonly_digest


def test_tap_ping_and_tcp(launch_guest):
    host_ip, guest_ip = "192.168.249.1", "192.168.249.2"
    guest = launch_guest("plugvm", cpus=1, memory="512M", extra=[
        "--net", f"tap=plugvmtest0,ip={host_ip},mask=255.255.255.0,mac=52:54:00:12:34:56"])
    run = guest.console.run

    def status(cmd):
        return guest.console.run_status(cmd)[0]

    assert run("cat /sys/class/net/eth0/address") == "52:54:00:12:34:56"
    assert status(f"ip addr add {guest_ip}/24 dev eth0 && ip link set eth0 up") == 0
    assert status(f"ping -c 3 -W 5 {host_ip} >/dev/null") == 0
    # TCP, guest → host: the host listens, the guest sends with busybox nc.
    server = socket.create_server((host_ip, 0))
    port = server.getsockname()[1]
    received = []

    def accept():
        server.settimeout(60)
        connection, _ = server.accept()
        with connection:
            chunks = []
            while data := connection.recv(65536):
                chunks.append(data)
            received.append(b"".join(chunks))
            
    listener = threading.Thread(target=accept)
    listener.start()
    assert status(f"head -c 200000 /dev/zero | tr '\\0' x | nc {host_ip} {port}") == 0
    listener.join(90)
    server.close()
    assert received == [b"x" * 200000]
    # TCP, host → guest: the guest listens, the host sends.
    guest.console.send("nc -l -p 7777 </dev/null >/tmp/got &\n")
    guest.console.wait_for("guest# ", 10)
    for attempt in range(20):
        try:
            with socket.create_connection((guest_ip, 7777), timeout=5) as c:
                c.sendall(b"hello from the host\n")
            break
        except OSError:
            threading.Event().wait(0.5)
    assert run("sleep 1; cat /tmp/got") == "hello from the host"
    assert guest.poweroff() == 0
