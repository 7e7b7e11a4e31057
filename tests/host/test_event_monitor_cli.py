"""--event-monitor on this host's KVM with the tiny guest, driven through the API: the
VM's lifecycle reaches the monitor as cloud-hypervisor reports it; bad values are one
line and exit 1."""

import os
import subprocess
import sys
import time

import pytest

from plugvm.builtin.event_monitor import read_events

from test_api import Plugvm, kernel, vm_body  # noqa: F401  (kernel is a fixture)


def events(path):
    return read_events(path.read_text())


def names(path):
    return [(e["event"], e["properties"]) for e in events(path)]


def test_the_lifecycle_through_the_api_is_reported(tmp_path, kernel):
    monitor = tmp_path / "events.json"
    vmm = Plugvm(tmp_path, "--event-monitor", f"path={monitor}")
    try:
        body = vm_body(kernel, tmp_path, cpus={"boot_vcpus": 1, "max_vcpus": 2})
        assert vmm.put("vm.create", body).status_code == 204
        assert vmm.put("vm.boot").status_code == 204
        disk = tmp_path / "d.img"
        disk.write_bytes(bytes(1 << 20))
        added = vmm.put("vm.add-disk", {"path": str(disk), "id": "d0"})
        assert added.status_code == 200
        assert vmm.put("vm.resize", {"desired_vcpus": 2}).status_code == 204
        assert vmm.put("vm.reboot").status_code == 204
        assert vmm.put("vm.shutdown").status_code == 204
        assert vmm.put("vmm.shutdown").status_code == 204
        assert vmm.proc.wait(20) == 0
    finally:
        vmm.close()
    bdf = added.json()["bdf"]
    assert names(monitor) == [
        ("starting", None), ("booting", None), ("booted", None),
        ("device-added", {"id": "d0", "bdf": bdf}),
        ("resizing", {"desired_vcpus": "2"}), ("resized", {"desired_vcpus": "2"}),
        ("rebooting", {"reason": "api"}), ("booting", None), ("booted", None), ("rebooted", None),
        ("shutdown", {"reason": "api"}), ("shutdown", None)]
    assert [e["source"] for e in events(monitor)] == ["vmm"] + ["vm"] * 10 + ["vmm"]
    # ch's layout: each object pretty-printed, then a blank line.
    assert monitor.read_text().startswith('{\n  "timestamp": {\n    "secs": 0,')
    assert monitor.read_text().endswith("}\n\n")


def test_an_inherited_fd_is_written(tmp_path, kernel):
    read, write = os.pipe()
    proc = subprocess.Popen([sys.executable, "-m", "plugvm.cli", "--kernel", str(kernel), "--serial", "off",
                             "--console", "off", "--memory", "size=64M", "--event-monitor", f"fd={write}"],
                            pass_fds=(write,), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    os.close(write)
    try:
        got, deadline = b"", time.monotonic() + 30
        while b'"booted"' not in got and time.monotonic() < deadline:
            got += os.read(read, 65536)
        assert b'"booting"' in got and b'"booted"' in got
    finally:
        proc.kill()
        proc.wait(10)
        os.close(read)


@pytest.mark.parametrize("value, message", [
    ("fd=", "--event-monitor: fd= needs a value"),
    ("path=/x,fd=3", "--event-monitor: give either path= or fd=, not both"),
    ("colour=red", "--event-monitor: unknown key 'colour'"),
    ("/tmp/x", "--event-monitor:"),
    ("path=/nonexistent-dir/x", "cannot be opened for writing (No such file or directory)"),
    ("fd=987", "is not an open file descriptor"),
])
def test_bad_values_are_one_line(tmp_path, kernel, value, message):
    done = subprocess.run([sys.executable, "-m", "plugvm.cli", "--kernel", str(kernel), "--event-monitor", value],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    [line] = done.stderr.strip().splitlines()
    assert message in line, line
