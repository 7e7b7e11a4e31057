"""The lab: run a command where real Linux guests can run under KVM.

On a host whose /dev/kvm is hardware VMX/SVM the command simply runs here. On
PVM hosts (and hosts without KVM) it runs inside L1: Debian's generic kernel
under QEMU's TCG emulator with an emulated AMD CPU that has SVM, whose kvm_amd
gives a /dev/kvm with real SVM semantics. L1's root is the host's root,
read-only over 9p, so the command sees the same paths, python and checkout;
a per-run folder is shared read-write and mounted at its host path. The
host's /tmp is visible (read-only, like the rest); TMPDIR points to a tmpfs.

L1 with more than one vCPU hung in 2 of 13 boots (nested-lab.md §3), so L1
gets one vCPU, and a watchdog kills an L1 whose heartbeat stops and retries once.

QEMU 7.2's TCG loses L1's LAPIC timer interrupt now and then while L1 runs L2
(lab-stall.md: VMRUN emulation writes the vCPU's interrupt_request without the
lock the main loop holds when it sets the timer's bit). L1's one-shot timer is
re-armed only by the handler that never runs, so L1 spins in L2 for ever. Two
defences, measured by bench/soak.py:
- L1 boots with `highres=off nohz=off` (TICK): its LAPIC timer is periodic, and
  QEMU raises the request again every period, so a lost one costs a tick (4 ms).
- A rescue: an L1 silent for RESCUE_SECONDS gets a key press on its i8042 (HMP
  `sendkey`); any device interrupt makes QEMU re-poll the APIC, and the stranded
  timer vector is taken at once. The command goes on; the rescue is recorded.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from plugvm.testing import hostkvm, l1_image
from plugvm.testing.debian import require
from plugvm.testing.errors import LabError, LabHangError, LabTimeoutError
from plugvm.testing.paths import build_dir

UP, BEGIN, END, FAILED = "PLUGVM-LAB-UP", "PLUGVM-LAB-BEGIN", "PLUGVM-LAB-END rc=", "PLUGVM-LAB-FAILED"
HEARTBEAT_SECONDS = 2
KMSG, MONITOR, POST_MORTEM = "l1-kmsg.log", "monitor.sock", "post-mortem.txt"
# Silence (no heartbeat) after which the watchdog sends the rescue interrupt; three
# missed beats. The rescue is harmless to an L1 that was only slow.
RESCUE_SECONDS = 6
# How long after a rescue an L1 still stuck at one L2 instruction is given up on.
RESCUE_WAIT_SECONDS = 10
# L1's kernel parameters for a periodic tick (see the module docstring); both are
# needed: Linux 6.1 only stays periodic with high-resolution timers and NO_HZ off.
TICK = {"periodic": "highres=off nohz=off", "oneshot": ""}
TICK_ENV = "PLUGVM_LAB_L1_TICK"
# Variables that describe the host session rather than the command.
_ENV_SKIP = {"HOME", "TMPDIR", "PWD", "OLDPWD", "SHLVL", "_", "TERM", "DISPLAY", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"}

# Stage 2, PID 1 in L1 after switch_root (host's /bin/sh). A background loop
# writes the heartbeat file that the host's watchdog reads.
STAGE2 = """\
#!/bin/sh
R=@RESULTS@
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
mkdir -p /run/tmp
# ttyS1 is a file on the host: the kernel log and a beat that do not go through 9p,
# so that after a hang the host can tell a stalled share from a stalled L1.
cat /dev/kmsg > /dev/ttyS1 2>/dev/null &
# The symbols for a post-mortem's RIP (Debian's System.map is a stub); saved once
# per L1 image, which boots with nokaslr so that they stay put.
[ -e @KALLSYMS@ ] || grep ' [tTwW] ' /proc/kallsyms > $R/kallsyms
( while :; do date +%s > $R/heartbeat; echo "beat $(cut -d' ' -f1 /proc/uptime)" > /dev/ttyS1; sleep @BEAT@; done ) &
sleep 0.2
echo "@UP@ uptime=$(cut -d' ' -f1 /proc/uptime)"
echo "@BEGIN@"
/bin/sh $R/command.sh </dev/null >/dev/console 2>&1
rc=$?
echo $rc > $R/rc
printf '\\n@END@%s\\n' $rc
dmesg > $R/dmesg.txt 2>&1
sync
echo o > /proc/sysrq-trigger
sleep 60
"""


@dataclass
class LabRun:
    """The outcome of one lab command: its exit status and where the run left its files."""

    returncode: int
    mode: str                       # "l1" or "direct"
    results: Path                   # shared with the command as $PLUGVM_LAB_RESULTS
    log: Path | None = None         # L1's console, timestamped
    attempts: int = 1
    boot_seconds: float | None = None   # L1's QEMU start → L1 ready to run the command
    seconds: float = 0.0
    rescues: list[Rescue] = field(default_factory=list)    # of the attempt that finished

    def cleanup(self) -> None:
        shutil.rmtree(self.results, ignore_errors=True)


@dataclass
class Rescue:
    """One silence of L1 that the watchdog answered with an interrupt (see the module docstring)."""

    at: float                   # time.time() when it was sent
    silent: float               # seconds L1 had been silent
    stuck: bool                 # L1's CPU was stuck at one L2 instruction: the TCG stall
    cleared: bool = False       # the heartbeat came back
    seconds: float = 0.0        # from the rescue to the next heartbeat
    where: str = ""             # the post-mortem's summary of L1's registers
    rechecked: bool = False     # looked at again RESCUE_WAIT_SECONDS after it was sent

    def describe(self) -> str:
        what = "stuck at one L2 instruction (QEMU TCG's lost timer interrupt)" if self.stuck else "silent, not stuck"
        outcome = f"heartbeat back {self.seconds:.1f} s later" if self.cleared else "no heartbeat after it"
        return f"L1 {what} for {self.silent:.0f} s; sent a key press to its i8042: {outcome}"


class _Hung(Exception):
    pass


@dataclass
class _Attempt:
    """State the console reader shares with the watchdog."""

    t0: float
    up: float | None = None
    rc: int | None = None
    failed: str | None = None
    tail: deque = field(default_factory=lambda: deque(maxlen=40))
    rescue: "Rescue | None" = None      # sent during the current silence, not yet answered
    rescues: list = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)


class Lab:
    """Runs commands in L1 (or directly on hardware KVM); see the module docstring."""

    def __init__(self, *, memory: str = "4G", boot_timeout: float = 180.0, hang_seconds: float | None = None,
                 status: Callable[[str], None] | None = None, attempts: int = 2, tick: str | None = None,
                 rescue: bool = True):
        self.memory = memory
        self.tick = tick or os.environ.get(TICK_ENV, "periodic")
        if self.tick not in TICK:
            raise ValueError(f"{TICK_ENV}={self.tick!r}: expected one of {', '.join(TICK)}")
        self.rescue = rescue
        self.attempts = attempts
        self.boot_timeout = boot_timeout
        self.hang_seconds = hang_seconds or float(os.environ.get("PLUGVM_LAB_HANG_SECONDS", "60"))
        self.status = status or (lambda msg: print(f"plugvm-lab: {msg}", file=sys.stderr, flush=True))
        self.mode = "l1" if hostkvm.needs_l1() else "direct"
        self.root = build_dir() / "lab"
        self.image: l1_image.L1Image | None = None
        self.rescues: list[Rescue] = []     # every rescue of this Lab's runs, in order

    def run(self, argv: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 3600.0, output: Callable[[str], None] | None = None) -> LabRun:
        """Run argv to completion and return its exit status. Its output (stdout and
        stderr together) goes line by line to output (default: our stdout).
        Raises LabError when the lab itself fails, never for the command's own failure."""
        if not argv:
            raise ValueError("no command given")
        output = output or (lambda line: (sys.stdout.write(line), sys.stdout.flush()))
        cwd = Path(cwd or Path.cwd()).absolute()
        env = {**os.environ, **(env or {})}
        start = time.monotonic()
        if self.mode == "direct":
            run = self._direct(argv, cwd, env, timeout, output)
        else:
            run = self._in_l1(argv, cwd, env, timeout, output)
        run.seconds = time.monotonic() - start
        return run

    def _results_dir(self) -> Path:
        (self.root / "runs").mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="run-", dir=self.root / "runs"))

    def _direct(self, argv, cwd, env, timeout, output) -> LabRun:
        results = self._results_dir()
        env = {**env, hostkvm.IN_LAB_ENV: "direct", "PLUGVM_LAB_RESULTS": str(results)}
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace")
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            for line in proc.stdout:
                output(line)
            rc = proc.wait()
            timed_out = timer.finished.is_set()   # set only by firing, until cancel()
        finally:
            timer.cancel()
        if timed_out:
            raise LabTimeoutError(f"the command did not finish within {timeout:.0f} s; killed it")
        return LabRun(rc, "direct", results)

    def _in_l1(self, argv, cwd, env, timeout, output) -> LabRun:
        require("qemu-system-x86_64", "qemu-system-x86")
        image = self.image = l1_image.build(self.root / "image", log=self.status)
        deadline = time.monotonic() + timeout
        hangs, folders = [], []
        for attempt in range(1, self.attempts + 1):
            results = self._results_dir()
            folders.append(results)
            self._write_scripts(results, argv, cwd, env, attempt)
            try:
                run = self._attempt(image, results, deadline, output)
                run.attempts = attempt
                return run
            except _Hung as hung:
                hangs.append(str(hung))
                self.status(f"attempt {attempt}: {hung}")
        raise LabHangError(f"L1 hung on {len(hangs)} attempt(s):\n" + "\n".join(hangs), folders)

    def _write_scripts(self, results: Path, argv, cwd: Path, env: dict[str, str], attempt: int) -> None:
        env = {k: v for k, v in env.items() if k not in _ENV_SKIP and k.isidentifier()}
        env.update({hostkvm.IN_LAB_ENV: "l1", "PLUGVM_LAB_RESULTS": str(results), "PLUGVM_LAB_ATTEMPT": str(attempt),
                    "HOME": "/run", "TMPDIR": "/run/tmp", "TERM": "dumb", "PYTHONDONTWRITEBYTECODE": "1"})
        lines = ["cd " + shlex.quote(str(cwd)) + " || exit 125"]
        lines += [f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items())]
        lines.append("exec " + shlex.join(argv))
        (results / "command.sh").write_text("\n".join(lines) + "\n")
        stage2 = (STAGE2.replace("@RESULTS@", shlex.quote(str(results))).replace("@BEAT@", str(HEARTBEAT_SECONDS))
                  .replace("@KALLSYMS@", shlex.quote(str(self.root / "image" / "kallsyms")))
                  .replace("@UP@", UP).replace("@BEGIN@", BEGIN).replace("@END@", END))
        (results / "stage2.sh").write_text(stage2)

    def _qemu_argv(self, image: l1_image.L1Image, results: Path) -> list[str]:
        return [
            *shlex.split(os.environ.get("PLUGVM_LAB_QEMU", "qemu-system-x86_64")), "-accel", "tcg", "-M", "q35", "-cpu", "qemu64,+svm,+npt", "-smp", "1",
            "-m", self.memory, "-nodefaults", "-display", "none", "-serial", "stdio",
            "-serial", f"file:{results / KMSG}", "-monitor", f"unix:{results / MONITOR},server=on,wait=off",
            "-no-reboot", "-kernel", str(image.kernel), "-initrd", str(image.initramfs),
            # nokaslr: a hung L1's RIP maps onto System.map as it is (see _post_mortem).
            "-append", " ".join(filter(None, ["console=ttyS0 panic=-1 loglevel=1 nokaslr", TICK[self.tick],
                                               f"plugvm.lab={results}"])),
            "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
            "-virtfs", f"local,path={results},mount_tag=lab,security_model=none,multidevs=remap",
        ]

    def _attempt(self, image, results: Path, deadline: float, output) -> LabRun:
        log_path = results / "l1-console.log"
        state = _Attempt(time.monotonic())
        # stdin must be given: QEMU's -serial stdio fails when stdin is closed (nested-lab.md §7).
        proc = subprocess.Popen(self._qemu_argv(image, results), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        reader = threading.Thread(target=self._read_console, args=(proc, state, log_path, output), daemon=True)
        reader.start()
        try:
            self._watch(proc, state, results, deadline)
        finally:
            try:
                proc.wait(30)  # L1 powers itself off once the command is done
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            reader.join(10)
        if state.rc is None:
            why = state.failed or f"L1's QEMU exited with status {proc.returncode} before the command finished"
            raise LabError(f"{why}; last lines of L1's console ({log_path}):\n" + "\n".join(state.tail))
        return LabRun(state.rc, "l1", results, log_path, boot_seconds=state.up - state.t0 if state.up else None,
                      rescues=state.rescues)

    def _watch(self, proc: subprocess.Popen, state: _Attempt, results: Path, deadline: float) -> None:
        heartbeat = results / "heartbeat"
        with state.changed:
            while proc.poll() is None:
                state.changed.wait(0.5)
                now = time.monotonic()
                if state.rc is not None or state.failed:
                    if state.rescue is not None and state.rc is not None:
                        self._rescued(state)     # L1 went on to finish the command
                    return
                if now > deadline:
                    proc.kill()
                    raise LabTimeoutError(f"the command did not finish within the lab's time limit; killed L1 "
                                          f"(pid {proc.pid})")
                if state.up is None and now - state.t0 > self.boot_timeout:
                    self._kill(proc, f"L1 did not come up within {self.boot_timeout:.0f} s")
                if state.up is not None:
                    try:
                        age = time.time() - heartbeat.stat().st_mtime
                    except FileNotFoundError:
                        age = now - state.up
                    if age > self.hang_seconds:
                        self._kill(proc, f"L1's heartbeat stopped {age:.0f} s ago", results,
                                   rescue=state.rescue)
                    self._check_silence(proc, state, results, age)

    def _check_silence(self, proc: subprocess.Popen, state: _Attempt, results: Path, age: float) -> None:
        """Answer a silent L1 with the rescue interrupt, once per silence; note
        whether it cleared. An L1 whose CPU is still stuck at one L2 instruction
        RESCUE_WAIT_SECONDS after the rescue is killed then, not at hang_seconds."""
        rescue = state.rescue
        if age < RESCUE_SECONDS:
            if rescue is not None:
                self._rescued(state)
            return
        if not self.rescue or age >= self.hang_seconds:
            return
        if rescue is None:
            n = len(state.rescues) + 1
            summary, stuck = post_mortem(results, self.image, name=f"stall-{n}.txt")
            rescue = state.rescue = Rescue(time.time(), age, stuck, where=summary)
            state.rescues.append(rescue)
            self.rescues.append(rescue)
            try:
                _monitor(results / MONITOR, ["sendkey shift"])
            except OSError as e:
                self.status(f"could not send the rescue interrupt: {e}")
            self.status(f"L1 silent for {age:.0f} s ({'stuck in L2' if stuck else 'not stuck'}); sent the rescue "
                        f"interrupt (post-mortem in {results / f'stall-{n}.txt'})")
        elif rescue.stuck and time.time() - rescue.at >= RESCUE_WAIT_SECONDS and not rescue.rechecked:
            rescue.rechecked = True
            summary, stuck = post_mortem(results, self.image, name=f"stall-{len(state.rescues)}-after.txt")
            if stuck:
                self._kill(proc, f"L1 silent for {age:.0f} s with its CPU stuck at one L2 instruction (QEMU TCG's "
                                 f"nested-SVM stall), and the rescue interrupt did not free it", summary=summary,
                           rescue=rescue)

    def _rescued(self, state: _Attempt) -> None:
        rescue, state.rescue = state.rescue, None
        rescue.cleared, rescue.seconds = True, time.time() - rescue.at
        self.status(f"rescued: {rescue.describe()}")

    def _kill(self, proc: subprocess.Popen, why: str, results: Path | None = None, summary: str | None = None,
              rescue: Rescue | None = None) -> None:
        if summary is None and results is not None:
            summary, _ = post_mortem(results, self.image)
        proc.kill()
        proc.wait()
        if rescue is not None:
            why += f" ({rescue.describe()})"
        raise _Hung(f"{why}: killed L1's QEMU (pid {proc.pid})" + (f"\n{summary}" if summary else ""))

    def _read_console(self, proc: subprocess.Popen, state: _Attempt, log_path: Path, output) -> None:
        in_command = False
        blank_pending = False   # the newline printed before the END marker is not the command's
        with open(log_path, "w") as log:
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                log.write(f"{time.monotonic() - state.t0:8.2f} {line}\n")
                log.flush()
                state.tail.append(line)
                if in_command:
                    if END in line:
                        head, _, rc = line.partition(END)
                        if head:
                            output(head + "\n")
                        with state.changed:
                            state.rc = int(rc.strip() or 1)
                            state.changed.notify_all()
                        in_command = False
                        continue
                    if blank_pending:
                        output("\n")
                    blank_pending = line == ""
                    if not blank_pending:
                        output(line + "\n")
                elif line.startswith(UP):
                    with state.changed:
                        state.up = time.monotonic()
                        state.changed.notify_all()
                    self.status(f"L1 up in {state.up - state.t0:.1f} s")
                elif line == BEGIN:
                    in_command = True
                elif line.startswith(FAILED):
                    with state.changed:
                        state.failed = line
                        state.changed.notify_all()
        with state.changed:
            state.changed.notify_all()


def _monitor(path: Path, commands: list[str], timeout: float = 10.0) -> str:
    """Run HMP commands on L1's QEMU monitor and return what it printed."""
    out = []
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(timeout)
        s.connect(str(path))
        for cmd in [None, *commands]:
            if cmd is not None:
                s.sendall(cmd.encode() + b"\n")
            buf = b""
            while not buf.endswith(b"(qemu) "):
                chunk = s.recv(65536)
                if not chunk:
                    break
                buf += chunk
            out.append(buf.decode("utf-8", "replace"))
    return "".join(out)


def _symbol(rip: int, system_map: Path | None) -> str:
    if system_map is None or not system_map.exists():
        return ""
    best = None
    for line in system_map.read_text().splitlines():
        addr, kind, name = (line.split() + ["", ""])[:3]
        try:
            value = int(addr, 16)
        except ValueError:
            continue
        if kind.lower() in "tw" and value <= rip and (best is None or value > best[0]):
            best = (value, name)
    if best is None or rip - best[0] > 0x10000:
        # Not L1's code: the CPU was running L2 (its KASLR'd kernel) when sampled.
        return "(not in L1's kernel: in L2)" if rip >= 0xffffffff80000000 else "(user space)"
    return f"{best[1]}+{rip - best[0]:#x}"


def _kmsg_line(record: str) -> str:
    """'6,346,2785534,-;text' (a /dev/kmsg record) → '[    2.785534] text'."""
    head, _, text = record.partition(";")
    fields = head.split(",")
    try:
        return f"[{int(fields[2]) / 1e6:12.6f}] {text}"
    except (IndexError, ValueError):
        return record


def post_mortem(results: Path, image: l1_image.L1Image | None, name: str = POST_MORTEM) -> tuple[str, bool]:
    """For a silent L1: save its registers (twice, to tell a loop from a stop), its
    local APIC and the tail of its kernel log to results/name. Return a summary and
    whether L1's CPU is stuck in L2: the same registers twice, outside L1's kernel."""
    lines, stuck = [], False
    try:
        first = _monitor(results / MONITOR, ["info registers"])
        time.sleep(1)
        second = _monitor(results / MONITOR, ["info registers", "info lapic"])
        (results / name).write_text(first + "\n----- one second later -----\n" + second)
        system_map = image.kernel.parent / "kallsyms" if image else None
        if system_map and not system_map.exists() and (results / "kallsyms").exists():
            shutil.copyfile(results / "kallsyms", system_map)
        where = ""
        for label, text in (("RIP", first), ("RIP 1 s later", second)):
            m = re.search(r"RIP=([0-9a-f]+)", text)
            hlt = " (halted)" if re.search(r"\bHLT=1", text) else ""
            cr3 = re.search(r"CR3=([0-9a-f]+)", text)
            if m:
                rip = int(m.group(1), 16)
                where = _symbol(rip, system_map)
                lines.append(f"L1 {label}: {rip:#x} {where}{hlt} CR3={cr3.group(1) if cr3 else '?'}")
        registers = [t.split("(qemu) ")[1].split("ES =")[0] if t.count("(qemu) ") > 1 else t for t in (first, second)]
        stuck = registers[0] == registers[1] and "in L2" in where
    except OSError as e:
        lines.append(f"L1's monitor did not answer: {e}")
    try:
        tail = (results / KMSG).read_text(errors="replace").splitlines()
        beats = [t for t in tail if t.startswith("beat ")]
        quiet = time.time() - (results / KMSG).stat().st_mtime
        lines.append(f"L1's last beat on ttyS1: {beats[-1] if beats else 'none'}; ttyS1 quiet for {quiet:.0f} s "
                     f"(a live ttyS1 with a stale heartbeat file means the 9p share stalled, not L1)")
        kernel = [_kmsg_line(t) for t in tail if not t.startswith("beat ")]
        lines += ["L1's last kernel messages:"] + kernel[-12:]
    except FileNotFoundError:
        pass
    return "\n".join(lines), stuck
