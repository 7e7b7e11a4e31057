"""Hotplug latency in the guest, plugvm against QEMU (a script, not a test): disks, CPUs, memory.

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
by itself in both). Memory: +1 GiB timed to the guest's MemTotal showing it (the
guest onlines new memory by itself: auto_online_blocks), for ACPI DIMMs (plugvm's
vm.resize with hotplug_method=acpi against QEMU's object_add memory-backend-memfd and
device_add pc-dimm) and virtio-mem (vm.resize with hotplug_method=virtio-mem against
QEMU's qom-set of a virtio-mem-pci's requested-size), and virtio-mem's shrink back.
Prints min/median per VMM and the ratios; lab figures are TCG-emulated, so only the
ratios mean anything.
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


GROWTH_KB = 1 << 20                 # +1 GiB
SEEN_KB = 900000                    # MemTotal grew by this much: the GiB is there (less its memmap)
MEMORY_RUNS = 3                     # ACPI memory is not unplugged live: each run adds a DIMM


def mem_total(guest: Guest) -> int:
    return int(guest.console.run("grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2"))


def mem_above(kb: int) -> str:
    return f"[ $(grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2) -gt {kb} ]"


def mem_below(kb: int) -> str:
    return f"[ $(grep MemTotal /proc/meminfo | tr -s ' ' | cut -d' ' -f2) -lt {kb} ]"


def plugvm_memory_runs(image: GuestImage, folder: Path, runs: int) -> dict[str, list[float]]:
    """+1 GiB per run under each method, each in its own VM (a VM has one method)."""
    times: dict[str, list[float]] = {"memory-acpi": [], "memory-virtio-mem": [], "memory-virtio-mem-shrink": []}
    for method, memory in (("acpi", f"512M,hotplug_size={runs}G"),
                           ("virtio-mem", "512M,hotplug_method=virtio-mem,hotplug_size=1G")):
        api = folder / f"api-{method}.sock"
        guest = Guest(plugvm_argv(image.quiet(), 1, memory, ["--api-socket", str(api)]), image.quiet(),
                      folder / "logs", name=f"plugvm-{method}")
        try:
            guest.wait_ready(300)
            for i in range(runs):
                base = mem_total(guest)
                desired = (512 << 20) + ((i + 1 if method == "acpi" else 1) << 30)
                times[f"memory-{method}"].append(timed(guest, mem_above(base + SEEN_KB),
                                                       lambda: api_put(api, "vm.resize", {"desired_ram": desired}),
                                                       f"plugvm memory-{method}"))
                if method == "virtio-mem":
                    times["memory-virtio-mem-shrink"].append(
                        timed(guest, mem_below(base + GROWTH_KB - SEEN_KB),
                              lambda: api_put(api, "vm.resize", {"desired_ram": 512 << 20}),
                              "plugvm memory-virtio-mem-shrink"))
            guest.poweroff()
        finally:
            guest.kill()
    return times


def qemu_memory_runs(image: GuestImage, folder: Path, runs: int) -> dict[str, list[float]]:
    qmp_path = folder / "qmp-memory.sock"
    argv = qemu_argv(image.quiet(), memory=f"512M,slots={runs + 1},maxmem={runs + 2}G", machine="pc",
                     extra=("-qmp", f"unix:{qmp_path},server=on,wait=off",
                            "-object", "memory-backend-memfd,id=vmem0,size=1G",
                            "-device", "virtio-mem-pci,id=vm0,memdev=vmem0,requested-size=0"))
    guest = Guest(argv, image.quiet(), folder / "logs", name="qemu-memory")
    times: dict[str, list[float]] = {"memory-acpi": [], "memory-virtio-mem": [], "memory-virtio-mem-shrink": []}
    qmp = None
    try:
        guest.wait_ready(300)
        qmp = Qmp(qmp_path)
        for i in range(runs):
            base = mem_total(guest)

            def dimm(i=i):
                qmp.execute("object-add", **{"qom-type": "memory-backend-memfd", "id": f"dimm{i}", "size": 1 << 30})
                qmp.execute("device_add", driver="pc-dimm", id=f"d{i}", memdev=f"dimm{i}")
            times["memory-acpi"].append(timed(guest, mem_above(base + SEEN_KB), dimm, "qemu memory-acpi"))
        for i in range(runs):
            base = mem_total(guest)
            times["memory-virtio-mem"].append(
                timed(guest, mem_above(base + SEEN_KB),
                      lambda: qmp.execute("qom-set", path="vm0", property="requested-size", value=1 << 30),
                      "qemu memory-virtio-mem"))
            times["memory-virtio-mem-shrink"].append(
                timed(guest, mem_below(base + GROWTH_KB - SEEN_KB),
                      lambda: qmp.execute("qom-set", path="vm0", property="requested-size", value=0),
                      "qemu memory-virtio-mem-shrink"))
        guest.poweroff()
    finally:
        if qmp is not None:
            qmp.close()
        guest.kill()
    return times


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
    memory_runs = min(runs, MEMORY_RUNS)
    results["plugvm"].update(plugvm_memory_runs(image, folder, memory_runs))
    results["qemu"].update(qemu_memory_runs(image, folder, memory_runs))
    for vmm, times in results.items():
        for kind, t in times.items():
            print(f"{vmm:7s} hot-{kind:24s} to the guest seeing it: median {statistics.median(t):6.2f} s "
                  f"(min {min(t):.2f}, max {max(t):.2f}, {len(t)} runs)")
    for call, t in CALLS.items():
        print(f"{call:36s} call answered after: median {statistics.median(t):6.3f} s")
    for kind in ("add", "remove", "cpu-add", "cpu-remove", "memory-acpi", "memory-virtio-mem",
                 "memory-virtio-mem-shrink"):
        p, q = results["plugvm"][kind], results["qemu"][kind]
        ratio = statistics.median(p) / statistics.median(q)
        print(f"ratio plugvm/qemu hot-{kind}: {ratio:.2f} (median over median, {len(p)} and {len(q)} runs; "
              f"min over min {min(p) / min(q):.2f}; below 1: plugvm is faster)")


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
