"""The demo: boot the test guest and show a scripted session on its console.

`make demo` runs this in the lab (or directly on a hardware-KVM host), with plugvm
as the VMM: two vCPUs booted of four possible, 512 MiB, the console on the serial
port, a virtio-blk disk the host wrote a greeting on, a virtio-net tap, and
virtio-rng; then the REST API through plugvm-remote (ping, info, pause, resume),
PCI hotplug (a second disk hot-added with --wait, read in the guest, kept across a
guest reboot, then removed), and the ACPI power button, which the guest answers by
powering off: plugvm ends with status 0.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from plugvm.testing.guest import Guest
from plugvm.testing.guest_image import GuestImage
from plugvm.testing.vmms import plugvm_argv

SESSION = [
    "uname -a",
    "grep -c ^processor /proc/cpuinfo",
    "grep -E 'MemTotal|MemFree' /proc/meminfo",
    "cat /proc/cmdline",
    "for d in /sys/bus/pci/devices/*; do echo ${d##*/} $(cat $d/vendor $d/device); done",
    "dd if=/dev/vda bs=512 skip=2048 count=1 2>/dev/null | head -c 60; echo",
    "ip addr add 192.168.251.2/24 dev eth0 && ip link set eth0 up && ping -c 2 192.168.251.1 | tail -2",
    "dd if=/dev/hwrng bs=16 count=1 2>/dev/null | od -An -tx1",
    "cut -d' ' -f1 /proc/modules | sort | tr '\\n' ' '",
    "cat /sys/devices/system/cpu/online /sys/devices/system/cpu/possible",
    "ls /sys/firmware/acpi/tables",
]


def main() -> int:
    image = GuestImage.load()
    folder = Path(tempfile.mkdtemp(prefix="plugvm-demo-"))
    disk, hot = folder / "disk.img", folder / "hot.img"
    for path, text in ((disk, b"Hello from the host, through virtio-blk and plugvm-virtio-blk."),
                       (hot, b"Hot-added while the guest ran, through PCI hotplug and the GED.")):
        with open(path, "wb") as f:
            f.truncate(64 << 20)
            f.seek(1 << 20)
            f.write(text)
    # The socket cannot live in a 9p-shared folder (the lab's): it goes in a local one.
    socket = Path(tempfile.mkdtemp(prefix="plugvm-demo-api-")) / "api.sock"
    argv = plugvm_argv(image, "boot=2,max=4", "512M,hotplug_size=1G", [
        "--disk", f"path={disk}", "--net", "tap=plugvmdemo0,ip=192.168.251.1,mask=255.255.255.0",
        "--api-socket", str(socket)])
    print(f"demo: booting {image.release} under: {' '.join(argv)}", flush=True)
    guest = Guest(argv, image, folder)
    try:
        guest.wait_ready()
        print(f"demo: guest ready {guest.boot_seconds:.1f} s after the VMM started", flush=True)
        for cmd in SESSION:
            print(f"guest# {cmd}\n{guest.console.run(cmd)}", flush=True)
        remote = [str(Path(sys.executable).parent / "plugvm-remote"), "--api-socket", str(socket)]

        def api(*command: str) -> str:
            out = subprocess.run(remote + list(command), capture_output=True, text=True, timeout=120)
            print(f"$ plugvm-remote {' '.join(command)}  (exit {out.returncode})", flush=True)
            return out.stdout.strip()

        print(api("ping"), flush=True)
        info = json.loads(api("info"))
        print(f"state {info['state']}; devices: " + ", ".join(
            f"{node['children'][0]} at {node['pci_bdf']}" for node in info["device_tree"].values() if "pci_bdf" in node))
        before = float(guest.console.run("cut -d' ' -f1 /proc/uptime"))
        api("pause")
        time.sleep(5)
        api("resume")
        after = float(guest.console.run("cut -d' ' -f1 /proc/uptime"))
        print(f"demo: across a 5 s pause the guest's clock moved {after - before:.1f} s", flush=True)
        # PCI hotplug: --wait answers once the guest's driver has the disk, so no polling.
        start = time.monotonic()
        print(api("--wait", "30", "add-disk", f"path={hot},id=hot0"), flush=True)
        print(f"demo: the guest had the disk {time.monotonic() - start:.2f} s after plugvm-remote started", flush=True)
        for cmd in ("ls /sys/block", "dd if=/dev/vdb bs=512 skip=2048 count=1 2>/dev/null | head -c 63; echo"):
            print(f"guest# {cmd}\n{guest.console.run(cmd)}", flush=True)
        # CPU and memory hotplug in one request (ACPI: a DIMM the guest onlines itself).
        print(f"guest# grep MemTotal /proc/meminfo\n{guest.console.run('grep MemTotal /proc/meminfo')}", flush=True)
        start = time.monotonic()
        api("--wait", "30", "resize", "--cpus", "3", "--memory", "1G")
        print(f"demo: the guest had a third CPU and a 512 MiB DIMM {time.monotonic() - start:.2f} s after "
              f"plugvm-remote started", flush=True)
        # --wait answered once the guest read the DIMM's _CRS; onlining its blocks follows.
        online = "i=0; while [ $(grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2) -lt 900000 ] && " \
                 "[ $i -lt 50 ]; do sleep 0.1; i=$((i+1)); done; grep MemTotal /proc/meminfo"
        for cmd in ("cat /sys/devices/system/cpu/present", online):
            print(f"guest# {cmd}\n{guest.console.run(cmd)}", flush=True)
        print("guest# reboot", flush=True)
        start = time.monotonic()
        guest.console.send("reboot\n")
        guest.wait_ready(300)
        print(f"demo: the guest rebooted and was ready again {time.monotonic() - start:.1f} s later", flush=True)
        print(f"guest# ls /sys/block\n{guest.console.run('ls /sys/block')}", flush=True)
        start = time.monotonic()
        api("--wait", "30", "remove-device", "hot0")
        print(f"demo: the guest let go of hot0 {time.monotonic() - start:.2f} s after plugvm-remote started", flush=True)
        print(f"guest# ls /sys/block\n{guest.console.run('ls /sys/block')}", flush=True)
        start = time.monotonic()
        api("power-button")
        status = guest.wait_exit(180)
        print(f"demo: the guest powered off; the VMM exited {status} {time.monotonic() - start:.1f} s later",
              flush=True)
        return status
    finally:
        guest.kill()


if __name__ == "__main__":
    sys.exit(main())
