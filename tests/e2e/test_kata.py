"""A Kata Containers sandbox's lifetime on plugvm, in the lab, on the Debian guest: Kata's
clh driver replayed from shared/reference/kata-clh.md with its bodies and header habits,
its timeouts, its raw vm.add-net carrying a tap fd, and its monitor's pings on a second
connection; the guest sees every change, and every reply decodes into Kata's Go types."""

import fcntl
import os
import shutil
import struct
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from kata_client import (KataClient, KataError, add_net_raw, check_pci_device_info, check_ping, check_vm_info)
from test_virtio_fs import Virtiofsd, mount
from test_vsock import hello

from plugvm.testing.conformance.guest import until
from plugvm.testing.guest import Guest
from plugvm.testing.threads import vcpu_threads

pytestmark = pytest.mark.lab
MiB, GiB = 1 << 20, 1 << 30
TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI, IFF_VNET_HDR = 0x0002, 0x1000, 0x4000
GUEST_MAC = "52:54:00:6b:61:74"


def open_tap(name: str) -> int:
    """The tap as Kata's tcfilter networking opens it."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
    return fd


def create_body(image, work: Path) -> dict:
    """Kata's vm.create (§4), initrd variant, with the lab's sizes (Kata: 2 GiB and the host's
    RAM) and its debug serial (Tty), which is how this test reaches the guest's shell."""
    return {"console": {"iommu": False, "mode": "Off"},
            "cpus": {"boot_vcpus": 1, "kvm_hyperv": False, "max_vcpus": 4, "nested": True,
                     "topology": {"cores_per_die": 4, "dies_per_package": 1, "packages": 1, "threads_per_core": 1}},
            "fs": [{"num_queues": 1, "pci_segment": 1, "queue_size": 1024, "socket": str(work / "virtiofsd.sock"),
                    "tag": "kataShared"}],
            "iommu": False, "landlock_enable": False,
            "memory": {"hotplug_method": "Acpi", "hotplug_size": 2 * GiB, "hugepages": False, "mergeable": False,
                       "prefault": False, "shared": True, "size": 512 * MiB, "thp": True},
            "payload": {"cmdline": image.quiet().cmdline, "initramfs": str(image.initramfs),
                        "kernel": str(image.vmlinux)},
            "platform": {"num_pci_segments": 2, "sev_snp": False, "tdx": False},
            "pvpanic": False,
            "rng": {"iommu": False, "src": "/dev/urandom"},
            "serial": {"iommu": False, "mode": "Tty"},
            "vsock": {"cid": 3, "iommu": False, "socket": str(work / "clh.sock")},
            "watchdog": False}


class Monitor(threading.Thread):
    """Kata's Check() every 5 s is isClhRunning: pings on a connection of its own, here
    every 0.2 s so that they overlap the other calls; each must answer within 1 s."""

    def __init__(self, path):
        super().__init__(daemon=True)
        self.client = KataClient(path)
        self.stop = threading.Event()
        self.failures: list[str] = []
        self.pings = 0

    def run(self):
        while not self.stop.wait(0.2):
            try:
                check_ping(self.client.call("GET", "vmm.ping", timeout=1, decode=True).json())
                self.pings += 1
            except (KataError, OSError, AssertionError) as e:
                self.failures.append(repr(e))


def wait_running(pid: int, path: Path, seconds: float = 10.0) -> KataClient:
    """isClhRunning(10): wait4 → kill(pid, 0) → GET vmm.ping (1 s), every 10 ms, 10 s in all."""
    deadline = time.monotonic() + seconds
    while True:
        os.kill(pid, 0)
        client = KataClient(path)
        try:
            check_ping(client.call("GET", "vmm.ping", timeout=1, decode=True).json())
            return client
        except (KataError, OSError):
            client.close()
        assert time.monotonic() < deadline, "plugvm did not answer vmm.ping within Kata's 10 s"
        time.sleep(0.01)


def mem_total_kb(guest) -> int:
    return int(guest.console.run("grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2"))


def test_a_kata_sandbox_lives_its_life_on_plugvm(guest_image, tmp_path):
    work = Path(tempfile.mkdtemp(prefix="plugvm-kata-"))        # unix socket paths stay short
    shared = work / "shared"
    shared.mkdir()
    (shared / "hello.txt").write_text("from the host\n")
    image = work / "block.img"
    image.write_bytes(bytes(16 * MiB))
    api = work / "clh-api.sock"
    virtiofsd = Virtiofsd(work / "virtiofsd.sock", shared)
    tap = open_tap("tap0_kata")
    # launchClh: the binary and --api-socket, nothing else; the PID must be the VMM.
    guest = Guest([sys.executable, "-m", "plugvm.cli", "--api-socket", str(api)], guest_image, tmp_path / "logs",
                  name="kata")
    monitor = None
    try:
        kata = wait_running(guest.process.pid, api)
        monitor = Monitor(api)
        monitor.start()

        # StartVM → bootVM: create and boot share one 10 s context.
        start = time.monotonic()
        kata.call("PUT", "vm.create", create_body(guest_image, work), timeout=10, decode=False)
        info = kata.call("GET", "vm.info", timeout=1, decode=True).json()
        check_vm_info(info)
        assert info["state"] == "Created"
        added = add_net_raw(api, {"fds": [tap], "iommu": False, "ip": "192.168.249.1",
                                  "mac": GUEST_MAC, "mask": "255.255.255.0", "num_queues": 2, "queue_size": 256,
                                  "vhost_mode": "Client", "vhost_user": False}, [tap])
        assert added.status in (200, 204), added.body
        kata.call("PUT", "vm.boot", timeout=max(10 - (time.monotonic() - start), 0.1), decode=False)
        info = kata.call("GET", "vm.info", timeout=1, decode=True).json()
        check_vm_info(info)
        assert info["state"] == "Running"
        guest.wait_ready(300)
        assert vcpu_threads(guest.process.pid) == ["vcpu0"]        # GetThreadIDs: ^vcpu\d+$ comm names

        # The devices of the create and the cold add-net: the interface, the shared
        # folder on segment 1, a vsock stream.
        assert until(guest, f"grep -qi {GUEST_MAC} /sys/class/net/*/address")
        fs_bdf = [n["pci_bdf"] for n in info["device_tree"].values() if n.get("pci_bdf", "").startswith("0001:")]
        assert fs_bdf == ["0001:00:00.0"], info["device_tree"]
        assert mount(guest, "kataShared") == 0
        assert guest.console.run("cat /mnt/hello.txt") == "from the host"
        hello(guest, work / "clh.sock")

        # ResizeVCPUs: read the current and max, clamp, resize (+1), with the 429 retry.
        cpus = kata.call("GET", "vm.info", timeout=1, decode=True).json()["config"]["cpus"]
        desired = min(cpus["boot_vcpus"] + 1, cpus["max_vcpus"])
        kata.resize_vcpus(desired)
        # The new CPU is present; Kata's agent onlines it, as this does.
        assert until(guest, "[ \"$(cat /sys/devices/system/cpu/present)\" = 0-1 ]")
        assert guest.console.run_status("echo 1 > /sys/devices/system/cpu/cpu1/online")[0] == 0
        assert guest.console.run("cat /sys/devices/system/cpu/online") == "0-1"
        assert kata.call("GET", "vm.info", timeout=1, decode=True).json()["config"]["cpus"]["boot_vcpus"] == 2

        # ResizeMemory: +1 GiB, aligned to the guest's 128 MiB block, clamped to hotplug_size.
        info = kata.call("GET", "vm.info", timeout=1, decode=True).json()
        before_kb = mem_total_kb(guest)
        current = info["config"]["memory"]["size"]
        desired_ram = min(current + GiB, info["config"]["memory"]["hotplug_size"] + current)
        kata.call("PUT", "vm.resize", {"desired_ram": desired_ram}, timeout=1, decode=False)
        info = kata.call("GET", "vm.info", timeout=1, decode=True).json()
        check_vm_info(info)
        assert info["config"]["memory"]["size"] == desired_ram and info["memory_actual_size"] == desired_ram
        deadline = time.monotonic() + 30
        while mem_total_kb(guest) < before_kb + 900 * 1024 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert mem_total_kb(guest) >= before_kb + 900 * 1024

        # hotplugAddBlockDevice (5 s): Kata's body; it requires 0000:00:SS.0.
        disk = kata.call("PUT", "vm.add-disk", {"backing_files": False, "direct": False, "image_type": "Raw",
                                                "iommu": False, "num_queues": 1, "path": str(image),
                                                "queue_size": 1024, "readonly": False, "sparse": True,
                                                "vhost_user": False}, timeout=5, decode=True).json()
        disk_id = check_pci_device_info(disk)
        assert until(guest, "[ -e /sys/block/vda ]")
        assert guest.console.run("cat /sys/block/vda/size") == str(16 * MiB // 512)
        kata.call("PUT", "vm.remove-device", {"id": disk_id}, timeout=5, decode=False)
        assert until(guest, "[ ! -e /sys/block/vda ]")

        kata.call("PUT", "vm.pause", timeout=1, decode=False)
        assert kata.call("GET", "vm.info", timeout=1, decode=True).json()["state"] == "Paused"
        kata.call("PUT", "vm.resume", timeout=1, decode=False)
        assert guest.console.run("echo alive") == "alive"

        # terminate: isClhRunning(3), then vmm.shutdown (3 s); the PID must be gone 3 s later.
        monitor.stop.set()
        monitor.join(5)
        wait_running(guest.process.pid, api, 3).close()
        kata.call("PUT", "vmm.shutdown", timeout=3, decode=False)
        stopped = time.monotonic()
        guest.process.wait(3)
        assert time.monotonic() - stopped < 3
        assert monitor.failures == [] and monitor.pings > 0, monitor.failures
        slow = [(verb, round(seconds, 3), limit) for verb, seconds, limit in kata.calls if seconds > limit]
        assert slow == [], slow
    finally:
        if monitor is not None:
            monitor.stop.set()
        guest.kill()
        print(f"--- plugvm console ---\n{guest.console.text[-6000:]}")
        print(f"--- plugvm stderr ---\n{guest.stderr()[-3000:]}")
        virtiofsd.kill()
        os.close(tap)
        shutil.rmtree(work, ignore_errors=True)
