"""Hotplug latency in the guest, plugvm against QEMU (a script, not a test): disks and CPUs.

    .venv/bin/python bench/hotplug.py [--runs 5]

In the lab (or directly on hardware KVM): the same Debian guest under plugvm and
under QEMU `-M pc` (ACPI PCI hotplug on bus 0: the same mechanism, a GED-less PIIX4
GPE instead of plugvm's GED). For each run, a virtio-blk disk is hot-added and then
removed: plugvm through its API (vm.add-disk, vm.remove-device, as ch-remote sends
them), QEMU through QMP (device_add virtio-blk-pci, device_del). Timed from just
before the call to the guest seeing /sys/block/vda appear, and disappear: the guest
polls every 10 ms and prints a marker the host reads on the serial console (the same
console path for both). Then a CPU: plugvm's vm.resize from 1 to 2 vCPUs and back
against QEMU's device_add of a host-x86_64-cpu and device_del, timed to
/sys/devices/system/cpu/cpu1 appearing and disappearing (the guest ejects the CPU
by itself in both). Prints min/median per VMM and the ratios; lab figures are
TCG-emulated, so only the ratios mean anything.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

from plugvm.testing.guest import Guest
from plugvm.testing.guest_image import GuestImage
from plugvm.testing.lab import Lab
from plugvm.testing.qemu import qemu_argv
from plugvm.testing.qmp import Qmp
from plugvm.testing.vmms import plugvm_argv

MiB = 1 << 20


class UnixHttp(http.client.HTTPConnection):
    def __init__(self, path: Path):
        super().__init__("localhost", timeout=60)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.settimeout(60)
        self.sock.connect(str(self.path))


def api_put(path: Path, verb: str, body: dict) -> int:
    connection = UnixHttp(path)
    try:
        connection.request("PUT", f"/api/v1/{verb}", json.dumps(body), {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        if response.status not in (200, 204):
            raise RuntimeError(f"{verb}: {response.status}")
        return response.status
    finally:
        connection.close()


CALLS: dict[str, list[float]] = {}       # (vmm kind) → how long the call itself took


def timed(guest: Guest, test: str, action, call: str) -> float:
    """Seconds from action() to the guest seeing `test` hold (polled every 10 ms)."""
    marker = f"HOTPLUG-SEEN-{time.monotonic_ns()}"
    guest.console.send(f"until {test}; do usleep 10000; done; echo {marker[:7]}''{marker[7:]}\n")
    time.sleep(0.5)                 # the loop is running before the call
    start = time.monotonic()
    action()
    CALLS.setdefault(call, []).append(time.monotonic() - start)
    guest.console.wait_for(marker, 60)
    seconds = time.monotonic() - start
    guest.console.wait_for("guest# ", 10)
    return seconds


def plugvm_runs(image: GuestImage, folder: Path, disk: Path, runs: int) -> dict[str, list[float]]:
    api = folder / "api.sock"
    guest = Guest(plugvm_argv(image.quiet(), "boot=1,max=2", "512M", ["--api-socket", str(api)]), image.quiet(),
                  folder / "logs", name="plugvm")
    times: dict[str, list[float]] = {"add": [], "remove": [], "cpu-add": [], "cpu-remove": []}
    try:
        guest.wait_ready(300)
        for _ in range(runs):
            times["cpu-add"].append(timed(guest, "[ -e /sys/devices/system/cpu/cpu1 ]",
                                          lambda: api_put(api, "vm.resize", {"desired_vcpus": 2}), "plugvm cpu-add"))
            times["cpu-remove"].append(timed(guest, "[ ! -e /sys/devices/system/cpu/cpu1 ]",
                                             lambda: api_put(api, "vm.resize", {"desired_vcpus": 1}),
                                             "plugvm cpu-remove"))
            time.sleep(1)
            times["add"].append(timed(guest, "[ -e /sys/block/vda ]",
                                      lambda: api_put(api, "vm.add-disk", {"path": str(disk), "id": "bench"}),
                                      "plugvm add"))
            times["remove"].append(timed(guest, "[ ! -e /sys/block/vda ]",
                                         lambda: api_put(api, "vm.remove-device", {"id": "bench"}),
                                         "plugvm remove"))
            time.sleep(1)           # the eject has followed; the id is free again
        guest.poweroff()
    finally:
        guest.kill()
    return times


def qemu_runs(image: GuestImage, folder: Path, disk: Path, runs: int) -> dict[str, list[float]]:
    qmp_path = folder / "qmp.sock"
    argv = qemu_argv(image.quiet(), cpus="1,maxcpus=2", machine="pc",
                     extra=("-qmp", f"unix:{qmp_path},server=on,wait=off"))
    guest = Guest(argv, image.quiet(), folder / "logs", name="qemu")
    times: dict[str, list[float]] = {"add": [], "remove": [], "cpu-add": [], "cpu-remove": []}
    qmp = None
    try:
        guest.wait_ready(300)
        qmp = Qmp(qmp_path)
        slot = next(c for c in qmp.execute("query-hotpluggable-cpus") if "qom-path" not in c)
        for i in range(runs):
            times["cpu-add"].append(timed(guest, "[ -e /sys/devices/system/cpu/cpu1 ]",
                                          lambda: qmp.execute("device_add", driver=slot["type"], id=f"cpu{i}",
                                                              **slot["props"]), "qemu cpu-add"))
            times["cpu-remove"].append(timed(guest, "[ ! -e /sys/devices/system/cpu/cpu1 ]",
                                             lambda: qmp.execute("device_del", id=f"cpu{i}"), "qemu cpu-remove"))
            qmp.wait_event("DEVICE_DELETED", device=f"cpu{i}")
            node = f"bench{i}"
            qmp.execute("blockdev-add", driver="raw", **{"node-name": node},
                        file={"driver": "file", "filename": str(disk)})
            times["add"].append(timed(guest, "[ -e /sys/block/vda ]",
                                      lambda: qmp.execute("device_add", driver="virtio-blk-pci", drive=node,
                                                          id=f"dev{i}"), "qemu add"))
            times["remove"].append(timed(guest, "[ ! -e /sys/block/vda ]",
                                         lambda: qmp.execute("device_del", id=f"dev{i}"), "qemu remove"))
            qmp.wait_event("DEVICE_DELETED", device=f"dev{i}")
            qmp.execute("blockdev-del", **{"node-name": node})
        guest.poweroff()
    finally:
        if qmp is not None:
            qmp.close()
        guest.kill()
    return times


def in_guest(runs: int) -> None:
    image = GuestImage.load()
    folder = Path(tempfile.mkdtemp(prefix="plugvm-bench-hotplug-"))
    disk = folder / "disk.img"
    with open(disk, "wb") as f:
        f.truncate(16 * MiB)
    results = {"plugvm": plugvm_runs(image, folder, disk, runs), "qemu": qemu_runs(image, folder, disk, runs)}
    for vmm, times in results.items():
        for kind, t in times.items():
            print(f"{vmm:7s} hot-{kind:10s} to the guest seeing it: median {statistics.median(t):6.2f} s "
                  f"(min {min(t):.2f}, {runs} runs)")
    for call, t in CALLS.items():
        print(f"{call:13s} call answered after: median {statistics.median(t):6.3f} s")
    for kind in ("add", "remove", "cpu-add", "cpu-remove"):
        ratio = statistics.median(results["plugvm"][kind]) / statistics.median(results["qemu"][kind])
        print(f"ratio plugvm/qemu hot-{kind}: {ratio:.2f} (below 1: plugvm is faster)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--in-lab", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_lab:
        in_guest(args.runs)
        return 0
    return Lab(attempts=3).run([sys.executable, __file__, "--in-lab", "--runs", str(args.runs)]).returncode


if __name__ == "__main__":
    sys.exit(main())
