"""Disk throughput in the guest, plugvm against QEMU (a script, not a test).

    .venv/bin/python bench/disk.py [--runs 3] [--mib 256]

In the lab (or directly on hardware KVM): the same Debian guest under plugvm
(virtio-blk plugin) and under QEMU (q35, virtio-blk-pci, cache=writeback like
plugvm's default), each given the same raw image, runs busybox dd over the whole
disk: reads with bs=1M, then writes with conv=fsync; then the guest's randread
(plugvm.testing.guest_tools) keeps --depth random 4 KiB O_DIRECT reads in flight
for --rand-seconds. Prints MB/s and IOPS, min/median over the runs (timed by the
guest's clock), and the ratios. Lab figures are TCG-emulated: only the ratios mean
anything.

With --py-spy PATH (py-spy from PyPI, not a dependency: `pip install --target DIR
py-spy`), the plugvm process is sampled during each dd and the folded stacks are
written beside the logs (one line per stack and its sample count), with a summary
of the busiest frames printed.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from boot import print_exit_stats          # bench/, beside this script
from plugvm.testing.guest import Guest
from plugvm.testing.guest_image import GuestImage
from plugvm.testing.lab import Lab
from plugvm.testing.qemu import qemu_argv
from plugvm.testing.vmms import plugvm_argv

MiB = 1 << 20
TIMES = re.compile(r"^([\d.]+) ([\d.]+)$")
KINDS = ("read", "write", "randread")


def dd_seconds(guest: Guest, command: str) -> float:
    """The guest's own time for the command (busybox dd prints no rate): /proc/uptime around it."""
    start = time.monotonic()
    output = guest.console.run(f"a=$(cut -d' ' -f1 /proc/uptime); {command} 2>/dev/null; "
                               f"echo $a $(cut -d' ' -f1 /proc/uptime)", timeout=900)
    host = time.monotonic() - start
    match = TIMES.match(output.strip().splitlines()[-1])
    if not match:
        raise RuntimeError(f"the guest said: {output!r}")
    seconds = float(match.group(2)) - float(match.group(1))
    print(f"  {command.split()[1]}: {seconds:.2f} s by the guest's clock, {host:.2f} s by the host's")
    return seconds


def random_iops(guest: Guest, depth: int, seconds: int) -> float:
    """4 KiB random reads per second with `depth` in flight, by the guest's own count and clock."""
    output = guest.console.run(f"randread /dev/vda 4096 {depth} {seconds}", timeout=seconds * 20 + 120)
    ops, took = output.strip().splitlines()[-1].split()
    iops = int(ops) / float(took)
    print(f"  randread: {ops} reads in {float(took):.2f} s by the guest's clock: {iops:,.0f} IOPS")
    return iops


class Sampler:
    """py-spy recording one process, folded stacks (`--format raw`), every thread."""

    def __init__(self, py_spy: str | None, pid: int, out: Path):
        self.out = out
        self.process = None if py_spy is None else subprocess.Popen(
            [py_spy, "record", "--pid", str(pid), "--rate", "250", "--threads", "--idle", "--nonblocking",
             "--format", "raw", "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def __enter__(self):
        return self

    def __exit__(self, *_):
        if self.process is None:
            return
        self.process.send_signal(2)          # py-spy writes its file on SIGINT
        self.process.wait(60)
        summarize(self.out)


def summarize(folded: Path, top: int = 8) -> None:
    """Per thread: its samples, and the innermost frames (three deep) most often on top,
    idle ones (a thread blocked in a system call) included."""
    threads: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for line in folded.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        threads[frames[0]][" < ".join(reversed(frames[-3:]))] += int(count)
    print(f"py-spy {folded}:")
    for thread, stacks in sorted(threads.items(), key=lambda t: -sum(t[1].values())):
        total = sum(stacks.values())
        print(f"  {thread}: {total} samples")
        for stack, n in stacks.most_common(top):
            print(f"    {100 * n / total:5.1f}% {stack}")


def in_guest(runs: int, mib: int, py_spy: str | None = None, queue_size: int | None = None,
             depth: int = 8, rand_seconds: int = 10) -> None:
    image = GuestImage.load()
    folder = Path(tempfile.mkdtemp(prefix="plugvm-bench-disk-"))
    # Profiles go where the host can read them after the lab is gone.
    profiles = Path(os.environ.get("PLUGVM_LAB_RESULTS", folder))
    disk = folder / "disk.img"
    with open(disk, "wb") as f:
        f.truncate((mib + 1) * MiB)
    stats_log = profiles / "plugvm-exit-stats.log"
    extra = ["--log-file", str(stats_log), "-v"] if py_spy else []
    if py_spy:
        os.environ["PLUGVM_EXIT_STATS"] = "1"     # and the exits by device, at power-off
    # Each VMM's default queue size (cloud-hypervisor's 128, QEMU's 256) unless one is given for both.
    plugvm_disk = f"path={disk},image_type=raw" + (f",queue_size={queue_size}" if queue_size else "")
    qemu_disk = ("-drive", f"file={disk},if=none,id=d0,format=raw,cache=writeback",
                 "-device", "virtio-blk-pci,drive=d0" + (f",queue-size={queue_size}" if queue_size else ""))
    argvs = {
        "plugvm": plugvm_argv(image, 1, "512M", ["--disk", plugvm_disk, *extra]),
        "qemu": qemu_argv(image, cpus=1, extra=qemu_disk),
    }
    rates: dict[tuple[str, str], list[float]] = {}
    for i in range(runs):
        for vmm, argv in argvs.items():
            guest = Guest(argv, image, folder / "logs", name=f"{vmm}{i}")
            try:
                guest.wait_ready(300)
                # Reads skip the first MiB, writes go there too: the same bytes either way.
                spy = py_spy if vmm == "plugvm" else None
                with Sampler(spy, guest.process.pid, profiles / f"{vmm}{i}-read.folded"):
                    read = dd_seconds(guest, f"dd if=/dev/vda of=/dev/null bs=1M skip=1 count={mib}")
                with Sampler(spy, guest.process.pid, profiles / f"{vmm}{i}-write.folded"):
                    write = dd_seconds(guest, f"dd if=/dev/zero of=/dev/vda bs=1M seek=1 count={mib} conv=fsync")
                with Sampler(spy, guest.process.pid, profiles / f"{vmm}{i}-randread.folded"):
                    iops = random_iops(guest, depth, rand_seconds)
                rates.setdefault((vmm, "read"), []).append(mib * MiB / read / 1e6)
                rates.setdefault((vmm, "write"), []).append(mib * MiB / write / 1e6)
                rates.setdefault((vmm, "randread"), []).append(iops)
                guest.poweroff()
            finally:
                guest.kill()
    if py_spy:
        print("plugvm exits, boot and both dd together, by device (Python time first):")
        print_exit_stats(stats_log)
    for (vmm, kind), r in sorted(rates.items(), key=lambda item: (item[0][0], KINDS.index(item[0][1]))):
        what = (f"randread 4 KiB, {depth} in flight, {rand_seconds} s: median {statistics.median(r):8,.0f} IOPS"
                if kind == "randread" else f"dd {kind:5s} {mib} MiB, bs=1M: median {statistics.median(r):7.1f} MB/s")
        print(f"{vmm:7s} {what} (min {min(r):,.1f}, max {max(r):,.1f}, {runs} runs)")
    for kind in KINDS:
        p, q = rates[("plugvm", kind)], rates[("qemu", kind)]
        ratio = statistics.median(p) / statistics.median(q)
        print(f"ratio plugvm/qemu {kind}: {ratio:.2f} (median over median, {runs} runs; min over min "
              f"{min(p) / min(q):.2f}, max over max {max(p) / max(q):.2f})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--py-spy", metavar="PATH", help="sample plugvm with this py-spy during each dd")
    parser.add_argument("--queue-size", type=int, help="the same virtqueue size for both VMMs' disk")
    parser.add_argument("--depth", type=int, default=8, help="random 4 KiB reads in flight (default 8)")
    parser.add_argument("--rand-seconds", type=int, default=10, help="how long the random reads run (default 10)")
    parser.add_argument("--in-lab", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_lab:
        in_guest(args.runs, args.mib, args.py_spy, args.queue_size, args.depth, args.rand_seconds)
        return 0
    forwarded = (["--py-spy", args.py_spy] if args.py_spy else []) + \
        (["--queue-size", str(args.queue_size)] if args.queue_size else []) + \
        ["--depth", str(args.depth), "--rand-seconds", str(args.rand_seconds)]
    return Lab(attempts=3).run([sys.executable, __file__, "--in-lab", "--runs", str(args.runs),
                                "--mib", str(args.mib), *forwarded]).returncode


if __name__ == "__main__":
    sys.exit(main())
