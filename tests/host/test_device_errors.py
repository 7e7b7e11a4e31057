"""Devices that cannot be attached stop plugvm before the guest runs, with one line
naming the device and the cause, and leave nothing open behind them."""

import os
import subprocess
import sys

import pytest

from plugvm import plugins
from plugvm.config import parse_cli
from plugvm.errors import PlugvmError
from plugvm.kvm import Kvm
from plugvm.machine import Machine
from plugvm.serial_port import SerialBackend
from plugvm.testing.tiny_kernel import bzimage


@pytest.fixture
def tiny(tmp_path):
    path = tmp_path / "tiny.bzImage"
    path.write_bytes(bzimage(b"hello\n"))
    return path


def plugvm(*args):
    return subprocess.run([sys.executable, "-m", "plugvm.cli", *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("device, message", [
    (["--disk", "path=/nonexistent/disk.img"], "--disk: cannot open path='/nonexistent/disk.img': No such file"),
    (["--net", "tap=lo"], "--net: cannot open tap 'lo'"),
    (["--rng", "src=/nonexistent/random"], "--rng: cannot open src='/nonexistent/random'"),
    (["--disk", "path=/x,colour=red"], "--disk: unknown key 'colour'"),
])
def test_a_device_that_cannot_be_attached_is_one_line_and_exit_1(tiny, device, message):
    proc = plugvm("--kernel", str(tiny), "--memory", "size=64M", "--serial", "tty", *device)
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"plugvm: error: {message}"), proc.stderr


def open_fds():
    return sorted(os.listdir("/proc/self/fd"))


def test_a_failed_device_leaves_no_fd_open(tiny, tmp_path):
    good = tmp_path / "good.img"
    good.write_bytes(bytes(1 << 20))
    registry = plugins.load()
    config = parse_cli(["--kernel", str(tiny), "--memory", "size=64M",
                        "--disk", f"path={good}", "path=/nonexistent/disk.img"], registry).vm
    kvm = Kvm()
    serial = SerialBackend("null", None)
    try:
        supported = kvm.supported_cpuid()
        before = open_fds()
        for _ in range(3):
            with pytest.raises(PlugvmError, match="--disk: cannot open"):
                Machine(kvm, config, serial, supported, registry)
        assert open_fds() == before
    finally:
        serial.close()
        kvm.close()


@pytest.fixture
def fifo(tmp_path):
    path = tmp_path / "fifo"
    os.mkfifo(path)
    return path


@pytest.mark.parametrize("option", [
    ["--rng", "src={fifo}"],
    ["--disk", "path={fifo},readonly=on"],
    ["--disk", "path={fifo}"],
    ["--serial", "file={fifo}"],
    ["--log-file", "{fifo}"],
])
def test_a_fifo_is_refused_at_once_never_waited_on(tiny, fifo, option):
    # A FIFO nobody writes to (or reads from) used to hang plugvm before the guest ran.
    args = [a.format(fifo=fifo) for a in option]
    serial = [] if option[0] == "--serial" else ["--serial", "null"]
    proc = plugvm("--kernel", str(tiny), "--memory", "size=64M", *serial, *args)
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and f"'{fifo}': it is a FIFO; it needs " in lines[0], proc.stderr
    assert lines[0].startswith(f"plugvm: error: {option[0]}: cannot use ")


@pytest.mark.parametrize("option, where", [
    (["--serial", "file={tmp}/missing/serial.log"], "No such file or directory"),
    (["--serial", "file={tmp}"], "Is a directory"),
    (["--log-file", "{tmp}/missing/plugvm.log"], "No such file or directory"),
    (["--log-file", "{tmp}"], "Is a directory"),
    (["--disk", "path={tmp}"], "Is a directory"),
    (["--disk", "path={tmp},readonly=on"], "it is a directory; it needs a regular file or a block device"),
])
def test_serial_and_log_files_that_cannot_be_written_are_one_line(tiny, tmp_path, option, where):
    args = [a.format(tmp=tmp_path) for a in option]
    proc = plugvm("--kernel", str(tiny), "--memory", "size=64M", *args)
    assert proc.returncode == 1 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"plugvm: error: {option[0]}: ") and where in lines[0], \
        proc.stderr
