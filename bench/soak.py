"""The lab soak: many real-guest runs in a row, counting L1 freezes (a script, not a test).

    .venv/bin/python bench/soak.py [--runs 100] [--workload boot|e2e] [--tick periodic|oneshot] [--no-rescue]
                                   [--boot-log]

Each run is one guest: `boot` alternates plugvm and QEMU (2 vCPUs, 512 MiB, quiet
boot), then in the guest takes CPU 1 offline and back three times (stop_machine,
where L2 vCPUs spin waiting for each other: the path on which QEMU 7.2's TCG lost
L1's timer interrupt), runs md5sum on both CPUs and powers off. `e2e` runs the
tests under tests/e2e in a loop, each test a run. All runs share one L1; when L1
dies, the rest resume in a fresh one, as the pytest batch does.

Prints, per run, its time and whether L1 froze (its heartbeat stopped), whether the
watchdog's rescue interrupt freed it, and at the end how many runs froze L1, how
many were rescued, how many L1s were killed, and the time per run. `--tick oneshot`
boots L1 without the periodic tick, to see the freeze itself; `--no-rescue` keeps
the watchdog from answering a silence, so that a freeze shows as a kill;
`--boot-log` boots the guests with their whole kernel log on the console (4× longer
in L2, as the lab's tests all did before they booted quiet).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = "soak.jsonl"
L1_ATTEMPTS = 12

WORKLOAD = ("for i in 1 2 3; do echo 0 > /sys/devices/system/cpu/cpu1/online; "
            "echo 1 > /sys/devices/system/cpu/cpu1/online; done; "
            "for c in 0 1; do taskset -c $c sh -c 'dd if=/dev/zero bs=64k count=400 2>/dev/null | md5sum' & done; "
            "wait; cat /sys/devices/system/cpu/online")


def _record(path: Path, **entry) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())


def inner_boot(first: int, runs: int, out: Path, boot_log: bool) -> None:
    """In L1: runs first..runs-1, one JSON line each."""
    from plugvm.testing.guest import Guest
    from plugvm.testing.guest_image import GuestImage
    from plugvm.testing.qemu import qemu_argv
    from plugvm.testing.vmms import plugvm_argv

    image = GuestImage.load() if boot_log else GuestImage.load().quiet()
    logs = Path(os.environ.get("PLUGVM_LAB_RESULTS") or tempfile.mkdtemp()) / "guests"
    for i in range(first, runs):
        vmm = "plugvm" if i % 2 == 0 else "qemu"
        argv = plugvm_argv(image, 2, "512M") if vmm == "plugvm" else qemu_argv(image, cpus=2)
        start = time.time()
        guest = Guest(argv, image, logs, name=f"run{i:03d}-{vmm}")
        error = None
        try:
            guest.wait_ready(300)
            online = guest.console.run(WORKLOAD, timeout=300).splitlines()[-1]
            if online != "0-1":
                error = f"CPUs online after the workload: {online!r}"
            status = guest.poweroff(120)
            if status != 0 and error is None:
                error = f"the VMM exited {status}"
        except Exception as e:   # a failed run is a result of the soak, not its end
            error = f"{type(e).__name__}: {str(e)[-600:]}"
        finally:
            guest.kill()
        _record(out, run=i, name=vmm, start=start, seconds=time.time() - start, boot=guest.boot_seconds,
                ok=error is None, error=error)
        print(f"(in L1) run {i} {vmm}: {time.time() - start:.1f} s, {error or 'ok'}", flush=True)


def inner_e2e(first: int, runs: int, out: Path, boot_log: bool) -> None:
    """In L1: the e2e tests in a loop until `runs` tests have run; each test one line."""
    i = first
    while i < runs:
        xml = Path(tempfile.mkdtemp()) / "junit.xml"
        start = time.time()
        subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
                        f"--junitxml={xml}", str(ROOT / "tests" / "e2e")], cwd=ROOT, stdout=subprocess.DEVNULL,
                       env={**os.environ, "PLUGVM_GUEST_BOOT_LOG": "1" if boot_log else "0"})
        t = start
        for case in ElementTree.parse(xml).getroot().iter("testcase"):
            if i >= runs:
                break
            failure = case.find("failure")
            failure = case.find("error") if failure is None else failure
            seconds = float(case.get("time", 0))
            _record(out, run=i, name=case.get("name"), start=t, seconds=seconds, boot=None,
                    ok=failure is None, error=None if failure is None else failure.get("message", "")[-600:])
            t += seconds
            i += 1
        print(f"(in L1) e2e loop done after run {i - 1}: {time.time() - start:.0f} s", flush=True)


def outer(args) -> int:
    from plugvm.testing.errors import LabHangError, TestingError
    from plugvm.testing.lab import Lab

    lab = Lab(attempts=1, tick=args.tick, rescue=not args.rescue_off, status=lambda m: print(f"  lab: {m}", flush=True))
    done: dict[int, dict] = {}
    killed: list[tuple[int, str]] = []
    l1_boots = 0
    t0 = time.monotonic()
    config = (f"L1 tick {lab.tick}, rescue {'on' if lab.rescue else 'off'}, "
              f"{'whole boot log' if args.boot_log else 'quiet boots'}")
    print(f"soak: {args.runs} {args.workload} runs; {config}", flush=True)
    while len(done) < args.runs and l1_boots < L1_ATTEMPTS:
        first = min(set(range(args.runs)) - set(done))
        l1_boots += 1
        argv = [sys.executable, __file__, "--inner", "--workload", args.workload, "--runs", str(args.runs),
                "--first", str(first), "--out", f"${{PLUGVM_LAB_RESULTS}}/{RESULTS}"]
        argv += ["--boot-log"] if args.boot_log else []
        folders = []
        try:
            run = lab.run(["sh", "-c", " ".join(argv)], cwd=ROOT, output=lambda line: print("  " + line, end=""))
            folders = [run.results]
        except LabHangError as e:
            folders = e.results
            killed.append((first, str(e).splitlines()[1] if "\n" in str(e) else str(e)))
        except TestingError as e:
            print(f"soak: the lab failed: {e}")
            return 125
        for folder in folders:
            try:
                lines = (Path(folder) / RESULTS).read_text().splitlines()
            except FileNotFoundError:
                continue
            for line in lines:
                entry = json.loads(line)
                done[entry["run"]] = entry
                rescued = [r for r in lab.rescues if entry["start"] <= r.at <= entry["start"] + entry["seconds"]]
                entry["rescues"] = [r.describe() for r in rescued]
                entry["froze"] = any(r.stuck for r in rescued)
                print(f"run {entry['run']:3d} {entry['name']:<50s} {entry['seconds']:6.1f} s "
                      f"{'ok' if entry['ok'] else 'FAILED: ' + str(entry['error'])}"
                      + "".join(f"\n      {d}" for d in entry["rescues"]), flush=True)
        if killed and killed[-1][0] == first and len(done) < args.runs:
            # L1 died in the first run it had not finished (they go in order): that run
            # counts as frozen, and the soak goes on past it in a fresh L1.
            culprit = min(set(range(args.runs)) - set(done))
            done[culprit] = dict(run=culprit, name="(L1 killed)", seconds=0.0, ok=False, froze=True, rescues=[],
                                 error=killed[-1][1])
            print(f"run {culprit:3d} L1 killed: {killed[-1][1]}", flush=True)
    runs = [done[i] for i in sorted(done)]
    froze = [r for r in runs if r["froze"]]
    rescued = [r for r in froze if r["ok"] and r["name"] != "(L1 killed)"]
    slow = sum(1 for r in runs for d in r["rescues"] if "not stuck" in d)
    failed = [r for r in runs if not r["ok"]]
    print(f"\nsoak: {len(runs)} {args.workload} runs in {time.monotonic() - t0:.0f} s, {l1_boots} L1 boot(s); "
          f"{config}")
    print(f"soak: froze L1: {len(froze)} runs; rescued and passed: {len(rescued)}; L1 killed: {len(killed)}; "
          f"silences that were not the stall: {slow}; failed runs: {len(failed)}")
    for name in sorted({r["name"] for r in runs if r["name"] != "(L1 killed)"}):
        t = [r["seconds"] for r in runs if r["name"] == name and r["ok"]]
        if t:
            print(f"soak: {name}: {len(t)} ok, per run min {min(t):.1f} s, median {statistics.median(t):.1f} s, "
                  f"mean {statistics.mean(t):.1f} s")
    for r in failed:
        print(f"soak: run {r['run']} {r['name']} failed: {r['error']}")
    return 0 if not failed and len(runs) == args.runs else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--workload", choices=("boot", "e2e"), default="boot")
    parser.add_argument("--tick", choices=("periodic", "oneshot"), default=None,
                        help="L1's tick (default: the lab's, periodic)")
    parser.add_argument("--no-rescue", dest="rescue_off", action="store_true")
    parser.add_argument("--boot-log", action="store_true", help="boot the guests without `quiet`")
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inner:
        (inner_boot if args.workload == "boot" else inner_e2e)(args.first, args.runs, args.out, args.boot_log)
        return 0
    return outer(args)


if __name__ == "__main__":
    sys.exit(main())
