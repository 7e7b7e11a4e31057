"""The lab's behaviour that needs no L1 boot: missing tools, direct mode, the L1 scripts."""

import shlex
import subprocess
import sys

import pytest

from plugvm.testing import hostkvm
from plugvm.testing.errors import LabTimeoutError, MissingToolError
from plugvm.testing.lab import Lab


def test_missing_qemu_is_one_line_naming_the_package(monkeypatch, tmp_path):
    monkeypatch.setenv(hostkvm.MODE_ENV, "l1")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(MissingToolError) as err:
        Lab().run(["true"])
    assert "\n" not in str(err.value)
    assert "qemu-system-x86_64" in str(err.value) and "qemu-system-x86" in str(err.value)


def test_lab_cli_reports_a_missing_package_in_one_line(tmp_path):
    env = {"PATH": str(tmp_path), hostkvm.MODE_ENV: "l1", "PLUGVM_BUILD_DIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-m", "plugvm.testing.lab_cli", "--", "true"], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 125
    assert proc.stderr.strip().count("\n") == 0
    assert "install the Debian package qemu-system-x86" in proc.stderr


def test_direct_mode_returns_the_command_status_and_output(monkeypatch, tmp_path):
    monkeypatch.setenv(hostkvm.MODE_ENV, "direct")
    monkeypatch.setenv("PLUGVM_BUILD_DIR", str(tmp_path))
    lines = []
    run = Lab().run(["sh", "-c", 'echo out; echo err >&2; echo "$PLUGVM_IN_LAB" > "$PLUGVM_LAB_RESULTS/f"; exit 4'],
                    output=lines.append)
    assert run.returncode == 4 and run.mode == "direct"
    assert sorted(lines) == ["err\n", "out\n"]
    assert (run.results / "f").read_text() == "direct\n"


def test_direct_mode_time_limit(monkeypatch, tmp_path):
    monkeypatch.setenv(hostkvm.MODE_ENV, "direct")
    monkeypatch.setenv("PLUGVM_BUILD_DIR", str(tmp_path))
    with pytest.raises(LabTimeoutError):
        Lab().run(["sleep", "30"], timeout=0.5, output=lambda line: None)


def test_l1_command_script_keeps_cwd_env_and_argv(tmp_path):
    lab = Lab()
    lab._write_scripts(tmp_path, ["python3", "-c", "print('a b')"], tmp_path / "w d",
                       {"KEEP": "it's here", "HOME": "/root", "BAD-NAME": "x"}, attempt=2)
    script = (tmp_path / "command.sh").read_text()
    assert script.splitlines()[0] == "cd " + shlex.quote(str(tmp_path / "w d")) + " || exit 125"
    assert "export KEEP=" + shlex.quote("it's here") in script
    assert "export HOME=/run" in script and "BAD-NAME" not in script
    assert "export PLUGVM_LAB_ATTEMPT=2" in script
    assert script.rstrip().endswith("exec python3 -c " + shlex.quote("print('a b')"))
    stage2 = (tmp_path / "stage2.sh").read_text()
    assert "PLUGVM-LAB-END rc=" in stage2 and str(tmp_path) in stage2


def _fake_monitor(path, rips, commands=None):
    """A unix socket answering HMP like QEMU's monitor: 'info registers' gives the next RIP
    of rips (the last one again once they run out); every command line goes to commands."""
    from unix_servers import serve_unix

    rips = list(rips)
    commands = [] if commands is None else commands

    def handle(conn):
        with conn:
            conn.sendall(b"QEMU 7.2.22 monitor - type 'help' for more information\n(qemu) ")
            buf = b""
            while data := conn.recv(4096):
                buf += data
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    commands.append(line.decode())
                    if line == b"info registers":
                        rip = rips.pop(0) if len(rips) > 1 else rips[0]
                        conn.sendall(f"info registers\nCPU#0\nRAX=0000000000000000\nRIP={rip:016x} RFL=00000246 "
                                     f"HLT=0\nES =0000\nCR3=0000000013a10000\n(qemu) ".encode())
                    else:
                        conn.sendall(line + b"\n(qemu) ")
    return serve_unix(path, handle)


@pytest.mark.parametrize("rips, stuck", [
    ((0xffffffff94f609e1, 0xffffffff94f609e1), True),      # one L2 address twice: the TCG stall
    ((0xffffffff94f609e1, 0xffffffff94f60a10), False),     # L2 moving on
    ((0xffffffff81a592eb, 0xffffffff81a592eb), False),     # L1's own kernel (halted, say)
])
def test_post_mortem_tells_the_tcg_stall_from_a_busy_or_idle_l1(tmp_path, rips, stuck):
    from plugvm.testing.l1_image import L1Image
    from plugvm.testing.lab import KMSG, MONITOR, post_mortem

    (tmp_path / "image").mkdir()
    (tmp_path / "image" / "kallsyms").write_text("ffffffff81a592e0 T native_safe_halt\n")
    (tmp_path / KMSG).write_text("beat 52.90\n6,359,51754153,-;kvm: something\n")
    image = L1Image(tmp_path / "image" / "vmlinuz", tmp_path / "image" / "initramfs.img", "6.1")
    server = _fake_monitor(tmp_path / MONITOR, rips)
    try:
        summary, found = post_mortem(tmp_path, image)
    finally:
        server.close()
    assert found is stuck, summary
    assert "L1's last beat on ttyS1: beat 52.90" in summary
    assert "[   51.754153] kvm: something" in summary
    if rips[0] == 0xffffffff81a592eb:
        assert "native_safe_halt+0xb" in summary
    else:
        assert "in L2" in summary


@pytest.fixture
def silent_l1(tmp_path):
    """A Lab watching a fake L1 whose monitor says its CPU is stuck at one L2 address."""
    from plugvm.testing.l1_image import L1Image
    from plugvm.testing.lab import KMSG, MONITOR, _Attempt

    (tmp_path / "image").mkdir()
    (tmp_path / "image" / "kallsyms").write_text("ffffffff81a592e0 T native_safe_halt\n")
    (tmp_path / KMSG).write_text("beat 52.90\n")
    commands, notes = [], []
    server = _fake_monitor(tmp_path / MONITOR, [0xffffffff94f609e1], commands)
    lab = Lab(status=notes.append)
    lab.image = L1Image(tmp_path / "image" / "vmlinuz", tmp_path / "image" / "initramfs.img", "6.1")
    proc = subprocess.Popen(["sleep", "60"])
    yield lab, _Attempt(0.0), proc, commands, notes
    proc.kill()
    proc.wait()
    server.close()


def test_watchdog_sends_one_rescue_per_silence_and_counts_it_cleared(silent_l1, tmp_path):
    from plugvm.testing.lab import RESCUE_SECONDS

    lab, state, proc, commands, notes = silent_l1
    lab._check_silence(proc, state, tmp_path, RESCUE_SECONDS + 0.5)
    lab._check_silence(proc, state, tmp_path, RESCUE_SECONDS + 1.5)
    assert commands.count("sendkey shift") == 1
    assert len(state.rescues) == 1 and state.rescues[0].stuck and lab.rescues == state.rescues
    lab._check_silence(proc, state, tmp_path, 0.5)         # the heartbeat came back
    assert state.rescues[0].cleared and state.rescue is None and proc.poll() is None
    assert notes[-1].startswith("rescued: L1 stuck at one L2 instruction")
    lab._check_silence(proc, state, tmp_path, RESCUE_SECONDS + 0.5)   # a new silence: a new rescue
    assert commands.count("sendkey shift") == 2 and len(state.rescues) == 2


def test_watchdog_kills_an_l1_still_stuck_after_the_rescue(silent_l1, tmp_path):
    from plugvm.testing.lab import RESCUE_SECONDS, RESCUE_WAIT_SECONDS, _Hung

    lab, state, proc, commands, notes = silent_l1
    lab._check_silence(proc, state, tmp_path, RESCUE_SECONDS + 0.5)
    state.rescue.at -= RESCUE_WAIT_SECONDS
    with pytest.raises(_Hung, match="the rescue interrupt did not free it"):
        lab._check_silence(proc, state, tmp_path, RESCUE_SECONDS + RESCUE_WAIT_SECONDS)
    assert proc.poll() is not None and not state.rescues[0].cleared


def test_no_rescue_without_the_option(silent_l1, tmp_path):
    from plugvm.testing.lab import RESCUE_SECONDS

    lab, state, proc, commands, notes = silent_l1
    lab.rescue = False
    lab._check_silence(proc, state, tmp_path, RESCUE_SECONDS + 0.5)
    assert "sendkey shift" not in commands and not state.rescues


def test_l1_tick_comes_from_the_environment(monkeypatch):
    from plugvm.testing.lab import TICK_ENV

    assert Lab().tick == "periodic"
    monkeypatch.setenv(TICK_ENV, "oneshot")
    assert Lab().tick == "oneshot"
    monkeypatch.setenv(TICK_ENV, "sometimes")
    with pytest.raises(ValueError, match=TICK_ENV):
        Lab()
