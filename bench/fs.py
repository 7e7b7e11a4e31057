"""virtio-fs throughput in the guest, plugvm against QEMU (a script, not a test).

    .venv/bin/python bench/fs.py [--runs 3] [--mib 256]

In the lab (or directly on hardware KVM): the same Debian guest mounts a host folder
served by the same virtiofsd (Debian's /usr/lib/qemu/virtiofsd, cache=none), under
plugvm (plugvm-virtio-fs, `--memory shared=on`) and under QEMU (q35,
`vhost-user-fs-pci` on a shared memfd backend). busybox dd reads a file of --mib MiB
with bs=1M, then writes one with conv=fsync, timed by the guest's /proc/uptime.
virtiofsd is started afresh for each VM (it exits when its frontend hangs up). The
data path runs between the guest and virtiofsd in both VMMs, so the goal is parity.
Lab figures are TCG-emulated: only the ratios mean anything.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from disk import dd_seconds

from plugvm.testing.guest import Guest
from plugvm.testing.guest_image import GuestImage
from plugvm.testing.lab import Lab
from plugvm.testing.qemu import qemu_argv
from plugvm.testing.vmms import plugvm_argv

MiB = 1 << 20
VIRTIOFSD = "/usr/lib/qemu/virtiofsd"


def virtiofsd(socket: Path, folder: Path) -> subprocess.Popen:
    if socket.exists():
        socket.unlink()
    proc = subprocess.Popen([VIRTIOFSD, f"--socket-path={socket}", "-o", f"source={folder}", "-o", "cache=none",
                             "-o", "sandbox=chroot"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not socket.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("virtiofsd did not start")
        time.sleep(0.05)
    return proc


def in_guest(runs: int, mib: int) -> None:
    image = GuestImage.load().quiet()
    folder = Path(tempfile.mkdtemp(prefix="plugvm-bench-fs-"))
    share = folder / "share"
    share.mkdir()
    with open(share / "file", "wb") as f:
        for _ in range(mib):
            f.write(b"\x5a" * MiB)
    socket = folder / "fs.sock"
    argvs = {
        "plugvm": plugvm_argv(image, 1, "512M,shared=on", ["--fs", f"tag=bench,socket={socket}"]),
        "qemu": qemu_argv(image, cpus=1, extra=(
            "-object", "memory-backend-memfd,id=mem,size=512M,share=on", "-numa", "node,memdev=mem",
            "-chardev", f"socket,id=fs,path={socket}", "-device", "vhost-user-fs-pci,chardev=fs,tag=bench")),
    }
    rates: dict[tuple[str, str], list[float]] = {}
    for i in range(runs):
        for vmm, argv in argvs.items():
            backend = virtiofsd(socket, share)
            guest = Guest(argv, image, folder / "logs", name=f"{vmm}{i}")
            try:
                guest.wait_ready(300)
                guest.console.run("mkdir -p /mnt && mount -t virtiofs bench /mnt")
                guest.console.run("echo 3 > /proc/sys/vm/drop_caches")
                read = dd_seconds(guest, "dd if=/mnt/file of=/dev/null bs=1M")
                write = dd_seconds(guest, f"dd if=/dev/zero of=/mnt/out bs=1M count={mib} conv=fsync")
                rates.setdefault((vmm, "read"), []).append(mib * MiB / read / 1e6)
                rates.setdefault((vmm, "write"), []).append(mib * MiB / write / 1e6)
                guest.console.run("rm /mnt/out; umount /mnt")
                guest.poweroff()
            finally:
                guest.kill()
                backend.kill()
                backend.wait(10)
    for (vmm, kind), r in sorted(rates.items()):
        print(f"{vmm:7s} virtio-fs dd {kind:5s} {mib} MiB, bs=1M: median {statistics.median(r):7.1f} MB/s "
              f"(min {min(r):.1f}, {runs} runs)")
    for kind in ("read", "write"):
        ratio = statistics.median(rates[("plugvm", kind)]) / statistics.median(rates[("qemu", kind)])
        print(f"ratio plugvm/qemu virtio-fs {kind}: {ratio:.2f} (goal: parity, at least 0.95)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--in-lab", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_lab:
        in_guest(args.runs, args.mib)
        return 0
    return Lab(attempts=3).run([sys.executable, __file__, "--in-lab", "--runs", str(args.runs),
                                "--mib", str(args.mib)]).returncode


if __name__ == "__main__":
    sys.exit(main())
