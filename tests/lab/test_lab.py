"""The lab itself, on this host: L1 boots, runs a command, hands back its status and
output, and survives a hung L1. These tests boot L1 from the host (they are not
`lab` tests, which run inside L1)."""

import os
import subprocess
import sys
import textwrap

import pytest

from plugvm.testing.errors import LabHangError
from plugvm.testing.lab import Lab
from plugvm.testing.paths import build_dir

pytestmark = pytest.mark.skipif(Lab().mode == "direct", reason="hardware KVM here: commands run without an L1")


def test_command_runs_in_l1_with_kvm_and_its_failure_comes_back():
    script = ('echo kernel=$(uname -r); grep -qw svm /proc/cpuinfo && echo svm=yes; '
              'test -c /dev/kvm && echo kvm=yes; echo in_lab=$PLUGVM_IN_LAB; '
              'echo shared > "$PLUGVM_LAB_RESULTS/out.txt"; echo to-stderr >&2; exit 3')
    proc = subprocess.run([sys.executable, "-m", "plugvm.testing.lab_cli", "--keep", "--", "sh", "-c", script],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 3, proc.stderr
    lines = proc.stdout.splitlines()
    host_kernel = subprocess.run(["uname", "-r"], capture_output=True, text=True).stdout.strip()
    assert lines[0].startswith("kernel=") and lines[0] != f"kernel={host_kernel}"
    assert lines[1:5] == ["svm=yes", "kvm=yes", "in_lab=l1", "to-stderr"]
    assert "L1 up in" in proc.stderr and "command exited 3" in proc.stderr
    kept = proc.stderr.split("run folder kept: ")[1].split()[0]
    assert open(f"{kept}/out.txt").read() == "shared\n"


def test_hung_l1_is_killed_by_pid_and_retried():
    # Attempt 1 freezes L1 for real: a SCHED_FIFO busy loop, with RT throttling
    # off, starves everything else on L1's only vCPU, heartbeat included.
    script = ('if [ "$PLUGVM_LAB_ATTEMPT" = 1 ]; then echo -1 > /proc/sys/kernel/sched_rt_runtime_us; '
              'exec chrt -f 99 sh -c "while :; do :; done"; fi; echo second attempt ran')
    notes, lines = [], []
    run = Lab(hang_seconds=12, status=notes.append).run(["sh", "-c", script], output=lines.append, timeout=600)
    assert run.returncode == 0 and run.attempts == 2
    assert lines[-1] == "second attempt ran\n"
    assert any("heartbeat stopped" in n and "killed L1's QEMU (pid" in n for n in notes), notes
    # The post-mortem: where L1's CPU was, and that its ttyS1 beat stopped too.
    assert any("L1 RIP: 0x" in n and "L1's last beat on ttyS1: beat " in n for n in notes), notes
    run.cleanup()


def test_l1_boots_with_a_periodic_tick():
    # The mitigation for QEMU 7.2 TCG's lost timer interrupt (lab.py): L1's LAPIC
    # timer runs periodic, so QEMU raises a lost request again a tick later.
    lines = []
    run = Lab().run(["sh", "-c", "cat /proc/cmdline; grep -m1 hres_active /proc/timer_list; "
                                 "grep 'Tick Device: mode' /proc/timer_list | sort -u"], output=lines.append)
    assert run.returncode == 0, lines
    cmdline, hres, *modes = [line.strip() for line in lines]
    assert {"highres=off", "nohz=off"} <= set(cmdline.split())
    assert hres.split() == [".hres_active", ":", "0"]
    assert modes == ["Tick Device: mode:     0"]      # TICKDEV_MODE_PERIODIC on every CPU
    run.cleanup()


def test_rescue_interrupt_frees_a_frozen_l1_and_the_command_goes_on():
    # A freeze that only an interrupt ends, as QEMU's lost timer interrupt is: a
    # SCHED_FIFO spin (RT throttling off) starves the heartbeat on L1's only vCPU
    # until the i8042's interrupt count moves. The watchdog must send that interrupt,
    # and the same attempt must finish: no kill, no retry.
    spin = ("import os\n"
            "count = lambda: [l for l in open('/proc/interrupts') if 'i8042' in l]\n"
            "open('/proc/sys/kernel/sched_rt_runtime_us', 'w').write('-1')\n"
            "os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(99))\n"
            "before = count()\n"
            "while count() == before: pass\n"
            "print('freed by an interrupt')\n")
    notes, lines = [], []
    run = Lab(hang_seconds=40, status=notes.append).run([sys.executable, "-c", spin], output=lines.append,
                                                        timeout=600)
    assert run.returncode == 0 and run.attempts == 1, (lines, notes)
    assert lines[-1] == "freed by an interrupt\n"
    assert len(run.rescues) == 1 and run.rescues[0].cleared and not run.rescues[0].stuck, notes
    assert any(n.startswith("rescued: L1 silent, not stuck") for n in notes), notes
    run.cleanup()


def test_l1_that_never_comes_up_fails_after_one_retry():
    notes = []
    with pytest.raises(LabHangError, match="2 attempt"):
        Lab(boot_timeout=0.5, status=notes.append).run(["true"], output=lambda line: None)
    assert sum("did not come up" in n for n in notes) == 2


def _outer_session(name: str, filename: str, source: str, **env: str) -> str:
    """Run a host pytest session on one test file of source in build/scratch/name;
    return its output, after checking that it exited 1 (some test failed)."""
    folder = build_dir() / "scratch" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / filename).write_text(textwrap.dedent(source))
    proc = subprocess.run([sys.executable, "-m", "pytest", "-v", "-p", "no:cacheprovider", "--rootdir", str(folder),
                           str(folder / filename)], capture_output=True, text=True, timeout=900, cwd=folder,
                          env={**os.environ, "PLUGVM_BUILD_DIR": str(build_dir()), **env})
    assert proc.returncode == 1, proc.stdout
    return proc.stdout


def test_pytest_lab_tests_run_as_one_batch_with_per_test_results_on_the_host():
    out = _outer_session("batch-check", "test_sample.py", """
        import os
        import pytest

        def test_on_host():
            assert "PLUGVM_IN_LAB" not in os.environ

        @pytest.mark.lab
        def test_in_lab():
            assert os.environ["PLUGVM_IN_LAB"] == "l1"
            assert os.path.exists("/dev/kvm")

        @pytest.mark.lab
        def test_in_lab_fails():
            assert 6 * 7 == 41, "this failure must show on the host"
    """)
    assert "test_sample.py::test_on_host PASSED" in out
    assert "test_sample.py::test_in_lab PASSED" in out
    assert "test_sample.py::test_in_lab_fails FAILED" in out
    assert "this failure must show on the host" in out
    assert "2 lab tests ran in one l1 batch" in out
    assert "1 failed, 2 passed" in out


def test_batch_gives_up_on_a_test_that_hangs_l1_and_runs_the_rest():
    out = _outer_session("batch-hang", "test_hang.py", """
        import subprocess
        import pytest

        pytestmark = pytest.mark.lab

        def test_first():
            pass

        def test_freezes_l1():
            open("/proc/sys/kernel/sched_rt_runtime_us", "w").write("-1")
            subprocess.run(["chrt", "-f", "99", "sh", "-c", "while :; do :; done"])

        def test_after_the_hang():
            pass
    """, PLUGVM_LAB_HANG_SECONDS="12")
    assert "test_hang.py::test_first PASSED" in out
    assert "test_hang.py::test_freezes_l1 FAILED" in out
    assert "test_hang.py::test_after_the_hang PASSED" in out
    assert "L1 hung 3 times while this test ran" in out
    assert "L1 hung while test_hang.py::test_freezes_l1 ran" in out
