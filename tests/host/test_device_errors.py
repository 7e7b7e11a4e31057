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
from plugvm.serial_port import Consoles
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
    proc = plugvm("--kernel", str(tiny), "--memory", "size=64M", "--serial", "tty", "--console", "off", *device)
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
    consoles = Consoles.for_config(config)
    try:
        supported = kvm.supported_cpuid()
        before = open_fds()
        for _ in range(3):
            with pytest.raises(PlugvmError, match="--disk: cannot open"):
                Machine(kvm, config, consoles, supported, registry)
        assert open_fds() == before
    finally:
        consoles.close()
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


def _kernels(tmp_path):
    """Kernel files a hostile user might give, by name."""
    hdrs = bytearray(0x210)
    hdrs[0x202:0x206] = b"HdrS"                       # a bzImage header cut short of 0x268
    files = {"short-bzimage": bytes(hdrs), "tiny-elf": b"\x7fELF\x02\x01", "four-byte-elf": b"\x7fELF"}
    paths = {}
    for name, data in files.items():
        paths[name] = tmp_path / name
        paths[name].write_bytes(data)
    sparse = tmp_path / "sparse-64g"
    with open(sparse, "wb") as f:
        f.truncate(64 << 30)
    paths["sparse"] = sparse
    return paths


@pytest.mark.parametrize("args, message", [
    (["--kernel", "{short-bzimage}"], "bzImage boot protocol"),
    (["--kernel", "{tiny-elf}"], "ELF header truncated"),
    (["--kernel", "{four-byte-elf}"], "ELF"),
    (["--kernel", "{sparse}"], "is neither a bzImage"),
    (["--kernel", "{tiny}", "--initramfs", "{sparse}"], "is 68719476736 bytes, more than the guest's"),
    (["--kernel", "{tiny}", "--memory", "size=1000000G"], "--memory: cannot allocate size="),
    (["--kernel", "{tiny}", "--memory", "size=8589934592G"], "--memory: size=8589934592G is more than"),
    (["--kernel", "{tiny}", "--cpus", "boot=1,affinity=[0@[0-18446744073709551615]]"], "more than 4096 values"),
    (["--kernel", "{tiny}", "--cpus", "boot=1,affinity=[0@[0-100000000]]"], "more than 4096 values"),
    (["--kernel", "{tiny}", "--cmdline", "\udcff"], "--cmdline: '\\udcff' is not UTF-8 text"),
    (["--kernel", "/{long}"], "--kernel: "),
])
def test_hostile_kernels_sizes_and_lists_are_one_line_not_a_traceback(tiny, tmp_path, args, message):
    names = {**{k: str(v) for k, v in _kernels(tmp_path).items()}, "tiny": str(tiny), "long": "x" * 5000}
    argv = [a.format(**names) for a in args]
    proc = subprocess.run([sys.executable, "-m", "plugvm.cli", *argv, "--serial", "null"], capture_output=True,
                          timeout=60, stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONIOENCODING": "utf-8"},
                          text=True, errors="surrogateescape")
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("plugvm: error: ") and message in lines[0], proc.stderr
    assert "internal error" not in lines[0]
