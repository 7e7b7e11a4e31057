"""Disk throughput in the guest, plugvm against QEMU (a script, not a test).

    .venv/bin/python bench/disk.py [--runs 3] [--mib 256]

In the lab (or directly on hardware KVM): the same Debian guest under plugvm
(virtio-blk plugin) and under QEMU (q35, virtio-blk-pci, cache=writeback like
plugvm's default), each given the same raw image, runs busybox dd over the whole
disk: reads with bs=1M, then writes with conv=fsync. Prints MB/s,
min/median over the runs (timed by the guest's /proc/uptime), and the ratios. Lab figures are TCG-emulated: only the
ratios mean anything.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
from pathlib import Path

from plugvm.testing.guest import Guest
from plugvm.testing.guest_image import GuestImage
from plugvm.testing.lab import Lab
from plugvm.testing.qemu import qemu_argv
from plugvm.testing.vmms import plugvm_argv

MiB = 1 << 20
TIMES = re.compile(r"^([\d.]+) ([\d.]+)$")


def dd_seconds(guest: Guest, command: str) -> float:
    """The guest's own time for the command (busybox dd prints no rate): /proc/uptime around it."""
    output = guest.console.run(f"a=$(cut -d' ' -f1 /proc/uptime); {command} 2>/dev/null; "
                               f"echo $a $(cut -d' ' -f1 /proc/uptime)", timeout=900)
    match = TIMES.match(output.strip().splitlines()[-1])
    if not match:
        raise RuntimeError(f"the guest said: {output!r}")
    return float(match.group(2)) - float(match.group(1))


def in_guest(runs: int, mib: int) -> None:
    image = GuestImage.load()
    folder = Path(tempfile.mkdtemp(prefix="plugvm-bench-disk-"))
    disk = folder / "disk.img"
    with open(disk, "wb") as f:
        f.truncate((mib + 1) * MiB)
    argvs = {
        "plugvm": plugvm_argv(image, 1, "512M", ["--disk", f"path={disk},image_type=raw"]),
        "qemu": qemu_argv(image, cpus=1, extra=("-drive", f"file={disk},if=virtio,format=raw,cache=writeback")),
    }
    rates: dict[tuple[str, str], list[float]] = {}
    for i in range(runs):
        for vmm, argv in argvs.items():
            guest = Guest(argv, image, folder / "logs", name=f"{vmm}{i}")
            try:
                guest.wait_ready(300)
                # Reads skip the first MiB, writes go there too: the same bytes either way.
                read = dd_seconds(guest, f"dd if=/dev/vda of=/dev/null bs=1M skip=1 count={mib}")
                write = dd_seconds(guest, f"dd if=/dev/zero of=/dev/vda bs=1M seek=1 count={mib} conv=fsync")
                rates.setdefault((vmm, "read"), []).append(mib * MiB / read / 1e6)
                rates.setdefault((vmm, "write"), []).append(mib * MiB / write / 1e6)
                guest.poweroff()
            finally:
                guest.kill()
    for (vmm, kind), r in sorted(rates.items()):
        print(f"{vmm:7s} dd {kind:5s} {mib} MiB, bs=1M: median {statistics.median(r):7.1f} MB/s "
              f"(min {min(r):.1f}, {runs} runs)")
    for kind in ("read", "write"):
        ratio = statistics.median(rates[("plugvm", kind)]) / statistics.median(rates[("qemu", kind)])
        print(f"ratio plugvm/qemu {kind}: {ratio:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--in-lab", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_lab:
        in_guest(args.runs, args.mib)
        return 0
    return Lab(attempts=3).run([sys.executable, __file__, "--in-lab", "--runs", str(args.runs), "--mib", str(args.mib)]).returncode


if __name__ == "__main__":
    sys.exit(main())
