"""Boot benchmarks (a script, not a test).

    .venv/bin/python bench/boot.py [--runs 3]

1. On this host's own /dev/kvm: plugvm's start-up (exec → the first byte the guest
   prints, a few instructions after its first one) and its RSS beyond guest RAM,
   with the tiny hand-made guest.
2. In the lab (or directly on hardware KVM): process start → GUEST-READY for plugvm
   and for QEMU (q35) on the same Debian guest, alternating, min/median and the ratio.
   Lab timings are TCG-emulated: only the ratio means anything.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from plugvm.testing.guest import Guest
from plugvm.testing.guest_image import GuestImage
from plugvm.testing.lab import Lab
from plugvm.testing.vmms import plugvm_argv
from plugvm.testing.qemu import qemu_argv
from plugvm.testing.tiny_kernel import bzimage


def _spread(values, unit: str = "s") -> str:
    """Median, min, max and the number of runs of durations in seconds, shown in `unit`."""
    scale, digits = (1e3, 0) if unit == "ms" else (1, 2)
    median, low, high = (v * scale for v in (statistics.median(values), min(values), max(values)))
    return f"median {median:.{digits}f} {unit} (min {low:.{digits}f}, max {high:.{digits}f}, {len(values)} runs)"


def print_exit_stats(log_file: Path) -> None:
    """The `exit stats` lines a plugvm run with PLUGVM_EXIT_STATS=1 logged at power-off."""
    for line in log_file.read_text().splitlines():
        if "exit stats" in line:
            print("  " + line.split("event='exit stats' ", 1)[-1])


def host_startup(runs: int) -> None:
    """exec → the first byte the tiny guest prints, with the hotplug guide's device set (a
    disk, a tap, rng, the API socket), beside the venv's own `python -c pass`; how soon
    the API answers its first request; and RSS beyond guest RAM."""
    folder = Path(tempfile.mkdtemp(prefix="plugvm-bench-"))
    kernel = folder / "tiny.bzImage"
    kernel.write_bytes(bzimage(b"!", poweroff=False))
    disk = folder / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    python = [sys.executable, "-c", "pass"]
    interpreter, startup, api_ready, overhead = [], [], [], []
    for i in range(runs):
        start = time.perf_counter()
        subprocess.run(python, check=True)
        interpreter.append(time.perf_counter() - start)
        sock = folder / f"api{i}.sock"
        argv = [sys.executable, "-m", "plugvm.cli", "--kernel", str(kernel), "--memory", "size=512M", "--serial",
                "tty", "--console", "off", "--disk", f"path={disk}", "--net", "ip=192.168.251.1,mask=255.255.255.0",
                "--api-socket", str(sock)]
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE)
        proc.stdout.read(1)
        startup.append(time.perf_counter() - start)
        while True:                     # the API's first answer (vmm.ping), polled every ms
            try:
                with socket.socket(socket.AF_UNIX) as s:
                    s.connect(str(sock))
                    s.sendall(b"GET /api/v1/vmm.ping HTTP/1.1\r\nHost: localhost\r\n\r\n")
                    if s.recv(12).startswith(b"HTTP/1.1 200"):
                        api_ready.append(time.perf_counter() - start)
                        break
            except OSError:
                time.sleep(0.001)
        status = dict(line.split(":", 1) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines())
        kib = {k: int(status[k].split()[0]) for k in ("VmRSS", "RssShmem")}
        overhead.append((kib["VmRSS"] - kib["RssShmem"]) / 1024)   # guest RAM is the memfd: shared
        proc.kill()
        proc.wait()
    ratio = statistics.median(startup) / statistics.median(interpreter)
    print(f"host ({os.uname().release}), {runs} runs, disk + tap + rng + API socket:")
    print(f"  plugvm exec → first guest output: {_spread(startup, 'ms')}; `python -c pass`: {_spread(interpreter, 'ms')}; "
          f"ratio {ratio:.1f}× (median; target ≤ 3×)")
    print(f"  exec → the API's first answer: {_spread(api_ready, 'ms')}; "
          f"ratio to the 100 ms target {statistics.median(api_ready) / 0.1:.2f} (median)")
    print(f"  RSS beyond guest RAM: median {statistics.median(overhead):.1f} MiB "
          f"(min {min(overhead):.1f}, max {max(overhead):.1f}, {runs} runs); "
          f"ratio to the 30 MiB target {statistics.median(overhead) / 30:.2f}")


def guest_boots(runs: int) -> None:
    """Process start → GUEST-READY, plugvm and QEMU q35 alternating on the same image and
    kernel command line, for 1 and 2 vCPUs, with the whole boot log on the console and
    with `quiet`."""
    base = GuestImage.load()
    logs = Path(tempfile.mkdtemp(prefix="plugvm-bench-"))
    for cpus in (1, 2):
        for log_kind, image in (("whole boot log", base), ("quiet", base.quiet())):
            times: dict[str, list[float]] = {"plugvm": [], "qemu": []}
            for i in range(runs):
                for vmm, argv in (("plugvm", plugvm_argv(image, cpus, "512M")),
                                  ("qemu", qemu_argv(image, cpus=cpus, cmdline=image.cmdline))):
                    guest = Guest(argv, image, logs, name=f"{vmm}-{cpus}cpu-{log_kind[0]}{i}")
                    try:
                        guest.wait_ready(300)
                        times[vmm].append(guest.boot_seconds)
                        guest.poweroff()
                    finally:
                        guest.kill()
            label = f"start → GUEST-READY, {cpus} vCPU{'s' if cpus > 1 else ''}, 512 MiB, {log_kind}"
            for vmm, t in times.items():
                print(f"{vmm:7s} {label}: {_spread(t)}")
            ratios = [p / q for p, q in zip(times["plugvm"], times["qemu"])]
            ratio = statistics.median(times["plugvm"]) / statistics.median(times["qemu"])
            print(f"ratio plugvm/qemu, {label}: {ratio:.2f} (median over median; per run pair "
                  f"{min(ratios):.2f}–{max(ratios):.2f}, {runs} runs)")


def exit_profile(quiet: bool) -> None:
    """One more plugvm boot with PLUGVM_EXIT_STATS=1: its exits by device and the Python
    time they took, from the log it writes at power-off (where a boot's time goes)."""
    image = GuestImage.load()
    image = image.quiet() if quiet else image
    logs = Path(tempfile.mkdtemp(prefix="plugvm-bench-"))
    log_file = logs / "exit-stats.log"
    os.environ["PLUGVM_EXIT_STATS"] = "1"
    try:
        guest = Guest(plugvm_argv(image, 1, "512M", ["--log-file", str(log_file), "-v"]), image, logs, name="stats")
        try:
            guest.wait_ready(300)
            seconds = guest.boot_seconds
            guest.poweroff()
        finally:
            guest.kill()
    finally:
        del os.environ["PLUGVM_EXIT_STATS"]
    print(f"exits of one plugvm boot ({'quiet' if quiet else 'whole boot log'}; start → GUEST-READY {seconds:.1f} s, "
          f"then poweroff), by device, Python time first:")
    print_exit_stats(log_file)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--guest-only", action="store_true", help=argparse.SUPPRESS)  # the lab half
    parser.add_argument("--exits", action="store_true", help="only the exit profile of a boot, quiet and not")
    args = parser.parse_args()
    if args.guest_only:
        if args.exits:
            exit_profile(quiet=True)
            exit_profile(quiet=False)
            return 0
        guest_boots(args.runs)
        return 0
    if args.exits:
        return Lab(attempts=3).run([sys.executable, __file__, "--guest-only", "--exits"]).returncode
    host_startup(max(args.runs, 5))
    run = Lab(attempts=3).run([sys.executable, __file__, "--guest-only", "--runs", str(args.runs)])
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
