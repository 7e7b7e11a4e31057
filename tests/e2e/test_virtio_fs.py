"""virtio-fs on the Debian guest, in the lab, with a real virtiofsd (QEMU's, as Debian
ships it): cloud-hypervisor's test_virtio_fs_hotplug (notes §4) with files both ways and
a memory resize while mounted, a cold --fs across a reboot, virtiofsd killed under a
reading guest, and add-fs requests that must attach nothing."""

import hashlib
import json
import os
import signal
import subprocess
import time

import pytest
from api_clients import curl, remote

pytestmark = pytest.mark.lab
MiB, GiB = 1 << 20, 1 << 30
VIRTIOFSD = "/usr/lib/qemu/virtiofsd"


class Virtiofsd:
    """virtiofsd serving `folder` on `socket`, started as a user would."""

    def __init__(self, socket, folder):
        self.socket, self.folder = socket, folder
        self.proc = None
        self.start()

    def start(self):
        if self.socket.exists():
            self.socket.unlink()
        self.proc = subprocess.Popen([VIRTIOFSD, f"--socket-path={self.socket}", "-o", f"source={self.folder}",
                                      "-o", "cache=none", "-o", "sandbox=chroot"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        while not self.socket.exists():
            assert self.proc.poll() is None, self.proc.stderr.read().decode()
            assert time.monotonic() < deadline, "virtiofsd made no socket"
            time.sleep(0.05)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc is not None:
            self.proc.wait(10)

    def wait(self, timeout):
        return self.proc.wait(timeout)


@pytest.fixture
def share(tmp_path):
    folder = tmp_path / "share"
    folder.mkdir()
    (folder / "file1").write_text("foo")
    made = []

    def start(name="fs.sock"):
        d = Virtiofsd(tmp_path / name, folder)
        made.append(d)
        return d
    yield folder, start
    for d in made:
        d.kill()


def mount(guest, tag="myfs", seconds=10):
    """cloud-hypervisor retries the mount for 10 s: the driver may still be probing."""
    return guest.console.run_status(f"mkdir -p /mnt; i=0; until mount -t virtiofs {tag} /mnt; do "
                                    f"i=$((i+1)); [ $i -ge {seconds * 10} ] && break; sleep 0.1; done; "
                                    f"grep -q ' /mnt virtiofs ' /proc/mounts", timeout=seconds + 30)[0]


def until(guest, test, seconds=10):
    loops = int(seconds * 10)
    return guest.console.run_status(f"i=0; until {test}; do i=$((i+1)); [ $i -ge {loops} ] && break; sleep 0.1; "
                                    f"done; {test}", timeout=seconds + 30)[0]


def test_virtio_fs_hotplug_as_cloud_hypervisor_tests_it(launch_guest, tmp_path, share):
    folder, start = share
    virtiofsd = start()
    api = tmp_path / "api.sock"
    guest = launch_guest("plugvm", memory="512M,shared=on,hotplug_size=1G", extra=["--api-socket", str(api)])
    run = guest.console.run
    # A socket nobody serves: a clear error after the connect retries, nothing attached.
    nobody = tmp_path / "nobody.sock"
    status, body = curl(api, "PUT", "vm.add-fs", json.dumps({"tag": "myfs", "socket": str(nobody), "id": "myfs0"}))
    assert status == 400 and str(nobody) in body, body
    added = remote(api, "add-fs", f"socket={virtiofsd.socket},id=myfs0,tag=myfs,num_queues=1,queue_size=1024")
    assert added.returncode == 0, added.stderr
    first = json.loads(added.stdout)
    assert first["id"] == "myfs0" and first["bdf"].startswith("0000:00:")
    assert mount(guest) == 0
    assert run("cat /mnt/file1") == "foo"
    run("echo bar > /mnt/file3 && dd if=/dev/urandom of=/mnt/big bs=1M count=8 2>/dev/null && sync")
    assert (folder / "file3").read_text() == "bar\n"
    assert hashlib.sha256((folder / "big").read_bytes()).hexdigest() == run("sha256sum /mnt/big | cut -d' ' -f1")
    # ACPI memory hotplug with the file system mounted: virtiofsd gets the DIMM first.
    assert remote(api, "resize", "--memory", "1G").returncode == 0
    assert until(guest, "[ $(grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2) -gt 960000 ]") == 0
    run("dd if=/dev/zero of=/dev/null bs=1M count=1 2>/dev/null")
    assert run("cat /mnt/file1") == "foo"
    # Buffers in the new RAM: most of boot RAM taken by a tmpfs file, then read through the
    # fs, whose buffers come from what is free (mostly the DIMM).
    run("mkdir -p /fill && mount -t tmpfs -o size=400M tmpfs /fill && dd if=/dev/zero of=/fill/f bs=1M count=380 "
        "2>/dev/null", timeout=120)
    assert run("sha256sum /mnt/big | cut -d' ' -f1") == hashlib.sha256((folder / "big").read_bytes()).hexdigest()
    run("rm /fill/f; umount /fill")
    run("umount /mnt")
    status, body = curl(api, "PUT", "vm.remove-device", json.dumps({"id": "myfs0"}), headers=["Prefer: wait=20"])
    assert status == 204, body
    virtiofsd.wait(10)              # it exits once we hang up, as it does for cloud-hypervisor
    # Restart virtiofsd, add the same id again: the id and the slot were freed.
    virtiofsd.start()
    again = remote(api, "add-fs", f"socket={virtiofsd.socket},id=myfs0,tag=myfs")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == first
    assert mount(guest) == 0 and run("cat /mnt/file3") == "bar"
    run("umount /mnt")
    assert guest.poweroff() == 0


def test_cold_fs_mounts_again_after_a_reboot(launch_guest, tmp_path, share):
    folder, start = share
    virtiofsd = start()
    guest = launch_guest("plugvm", memory="512M,shared=on",
                         extra=["--fs", f"tag=boot,socket={virtiofsd.socket}"])
    run = guest.console.run
    assert mount(guest, "boot") == 0 and run("cat /mnt/file1") == "foo"
    run("echo before-reboot > /mnt/r && sync")
    guest.console.send("reboot -f\n")
    guest.wait_ready(300)
    # The connection outlived the boot (virtiofsd would have exited otherwise).
    assert virtiofsd.proc.poll() is None
    assert mount(guest, "boot") == 0 and run("cat /mnt/r") == "before-reboot"
    run("umount /mnt")
    assert guest.poweroff() == 0


def test_virtiofsd_killed_under_a_reading_guest_breaks_only_its_device(launch_guest, tmp_path, share):
    folder, start = share
    with open(folder / "large", "wb") as f:
        f.write(os.urandom(MiB) * 16)
    virtiofsd = start()
    api = tmp_path / "api.sock"
    disk = tmp_path / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(8 * MiB)
    guest = launch_guest("plugvm", memory="512M,shared=on",
                         extra=["--api-socket", str(api), "--disk", f"path={disk}",
                                "--fs", f"tag=myfs,socket={virtiofsd.socket},id=myfs0"])
    run = guest.console.run
    assert mount(guest) == 0
    guest.console.send("(while cat /mnt/large > /dev/null 2>&1; do :; done; echo reader-ended > /tmp/reader) &\n")
    time.sleep(2)
    virtiofsd.kill()
    # The VMM lives and answers; the device says it is broken; the guest's reads end in
    # errors (plugvm answers them), so the reader stops; the disk still works.
    status, body = curl(api, "GET", "vm.info")
    assert status == 200 and guest.process.poll() is None, body
    assert until(guest, "[ -e /tmp/reader ]", seconds=30) == 0
    assert run("dd if=/dev/vda of=/dev/null bs=1M count=8 2>&1 | grep -c 'records in'") == "1"
    # remove-device removes it: the guest lets go (its driver's requests all ended), and
    # the id and slot are free again.
    run("umount -l /mnt")
    status, body = curl(api, "PUT", "vm.remove-device", json.dumps({"id": "myfs0"}), headers=["Prefer: wait=30"])
    assert status == 204, body
    info = json.loads(curl(api, "GET", "vm.info")[1])
    assert "myfs0" not in info["device_tree"] and not info["config"].get("fs")
    virtiofsd.start()
    again = remote(api, "add-fs", f"socket={virtiofsd.socket},id=myfs0,tag=myfs")
    assert again.returncode == 0, again.stderr
    assert mount(guest) == 0 and run("cat /mnt/file1") == "foo"
    run("umount /mnt")
    assert guest.poweroff() == 0


def test_add_fs_refusals_attach_nothing(launch_guest, tmp_path, share):
    folder, start = share
    virtiofsd = start()
    api = tmp_path / "api.sock"
    unshared = launch_guest("plugvm", memory="512M", extra=["--api-socket", str(api)])
    status, body = curl(api, "PUT", "vm.add-fs", json.dumps({"tag": "myfs", "socket": str(virtiofsd.socket)}))
    assert status == 400 and "shared=on" in body, body
    assert virtiofsd.proc.poll() is None              # never connected: virtiofsd still waits
    status, body = curl(api, "PUT", "vm.add-fs", json.dumps({"tag": "t" * 37, "socket": str(virtiofsd.socket)}))
    assert status == 400 and "tag" in body and "36" in body, body
    info = json.loads(curl(api, "GET", "vm.info")[1])
    assert "fs" not in info["config"] and not any(k.startswith("_fs") for k in info["device_tree"])
    assert unshared.poweroff() == 0
