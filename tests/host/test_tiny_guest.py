"""plugvm on this host's own /dev/kvm, whatever kind it is (PVM here: only its instruction
emulator runs ordinary guests, so the guest is a hand-made bzImage of a few bytes)."""

import subprocess
import sys
import time

import pytest

from plugvm.testing.hostkvm import kvm_kind

from plugvm.testing.tiny_kernel import bzimage, pvh_elf


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.bzImage"
    path.write_bytes(bzimage(b"tiny guest says hello\n"))
    return path


def plugvm(*args, timeout=60):
    return subprocess.run([sys.executable, "-m", "plugvm.cli", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_tiny_bzimage_prints_on_com1_and_powers_off(tiny):
    start = time.monotonic()
    proc = plugvm("--kernel", str(tiny), "--cpus", "boot=1", "--memory", "size=64M", "--serial", "tty",
                  "--console", "off")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "tiny guest says hello\n"
    assert time.monotonic() - start < 30


def test_serial_file_gets_the_output(tiny, tmp_path):
    out = tmp_path / "serial.log"
    proc = plugvm("--kernel", str(tiny), "--memory", "size=64M", "--serial", f"file={out}")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "" and out.read_text() == "tiny guest says hello\n"


def test_serial_null_discards(tiny):
    proc = plugvm("--kernel", str(tiny), "--memory", "size=64M", "--serial", "null")
    assert proc.returncode == 0 and proc.stdout == ""


def test_logs_go_to_stderr_or_log_file_not_the_console(tiny, tmp_path):
    log = tmp_path / "plugvm.log"
    proc = plugvm("--kernel", str(tiny), "--memory", "size=64M", "--serial", "tty", "--console", "off", "-vv",
                  "--log-file", str(log))
    assert proc.returncode == 0
    assert proc.stdout == "tiny guest says hello\n" and proc.stderr == ""
    assert "guest powered off" in log.read_text()


@pytest.mark.skipif(kvm_kind() != "pvm", reason="only PVM's instruction emulator fails on INT3")
def test_instruction_kvm_cannot_run_is_a_clear_error(tmp_path):
    # PVM runs ordinary guests in KVM's instruction emulator, which has no INT3
    # (guest-recipe.md §0: where the Debian kernel dies); the tiny guest starts with one.
    image = bytearray(bzimage(b""))
    image[1024] = 0xCC
    kernel = tmp_path / "int3.bzImage"
    kernel.write_bytes(bytes(image))
    proc = plugvm("--kernel", str(kernel), "--memory", "size=64M", "--serial", "tty", "--console", "off")
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("plugvm: error: ")
    assert "instruction bytes cc" in proc.stderr and "RIP 0x100000" in proc.stderr
    assert "PVM" in proc.stderr


def test_pvh_elf_gets_hvm_start_info_and_its_command_line(tmp_path):
    kernel = tmp_path / "tiny.elf"
    kernel.write_bytes(pvh_elf())
    proc = plugvm("--kernel", str(kernel), "--memory", "size=64M", "--serial", "tty", "--console", "off",
                  "--cmdline", "pvh says hi")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "pvh says hi"


def test_guest_reset_rebuilds_the_vm_and_boots_again(tmp_path):
    # The tiny guest prints, then writes the FADT's reset value to the reset register:
    # each reset must rebuild the VM from its configuration and boot the kernel again.
    image = bytearray(bzimage(b"boot\n"))
    image[1024 + 21:1024 + 23] = b"\xb0\x01"          # mov al, 1 (reset) instead of S5
    kernel = tmp_path / "reset.bzImage"
    kernel.write_bytes(bytes(image))
    log = tmp_path / "plugvm.log"
    proc = subprocess.Popen([sys.executable, "-m", "plugvm.cli", "--kernel", str(kernel), "--memory", "size=64M",
                             "--serial", "tty", "--console", "off", "-v", "--log-file", str(log)],
                            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        assert proc.stdout.read(15) == b"boot\nboot\nboot\n"
    finally:
        proc.kill()
        proc.wait()
    text = log.read_text()
    assert "guest reset; rebuilding the VM" in text and "boot=3" in text


def test_cloud_hypervisors_defaults_give_a_console_that_a_guest_without_it_leaves_alone(tiny):
    # --serial null --console tty: the virtio-console exists (tty, on our stdout), COM1 is discarded.
    proc = plugvm("--kernel", str(tiny), "--memory", "size=64M")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""


def test_serial_tty_with_the_default_console_tty_warns_as_ch_does(tiny):
    # ch ≤ v36 refused the pair (DoubleTtyMode); since v37 it warns, and so does plugvm.
    proc = plugvm("--kernel", str(tiny), "--memory", "size=64M", "--serial", "tty")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "tiny guest says hello\n"
    assert "Console mode tty specified for both serial and console" in proc.stderr


def test_a_max_phys_bits_too_small_for_the_layout_is_one_line(tiny):
    proc = plugvm("--kernel", str(tiny), "--memory", "size=64M", "--serial", "null", "--console", "off",
                  "--cpus", "max_phys_bits=36")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "max_phys_bits" in proc.stderr and "36-bit" in proc.stderr
