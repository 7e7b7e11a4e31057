"""--cpus core_scheduling=vm, cloud-hypervisor's default, applied: the VMM's threads, its
vCPUs among them, share one core-scheduling cookie where the kernel has core
scheduling; where it has none (this PVM host's kernel, Debian's), the VM still boots
and the log says once that it runs without one."""

import os
import re
import subprocess
import sys
import time

from plugvm.cpu import core_scheduling
from plugvm.testing.tiny_kernel import bzimage


def test_the_vms_threads_share_one_cookie_or_the_log_says_why_not(tmp_path):
    kernel = tmp_path / "spin.bzImage"
    kernel.write_bytes(bzimage(b"tiny guest up\n", poweroff=False))
    log = tmp_path / "plugvm.log"
    proc = subprocess.Popen([sys.executable, "-m", "plugvm.cli", "--kernel", str(kernel), "--cpus", "boot=2",
                             "--memory", "size=64M", "--serial", "off", "--console", "off", "--log-file", str(log),
                             "-v"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        names = {}
        while time.monotonic() < deadline:
            names = {tid: open(f"/proc/{proc.pid}/task/{tid}/comm").read().strip()
                     for tid in os.listdir(f"/proc/{proc.pid}/task")}
            if {"vcpu0", "vcpu1"} <= set(names.values()):
                break
            time.sleep(0.05)
        vcpus = [int(tid) for tid, name in names.items() if name.startswith("vcpu")]
        assert len(vcpus) == 2, names
        text = log.read_text()
        cookies = {core_scheduling.cookie(tid) for tid in vcpus}
        if "share one cookie" in text:
            assert len(cookies) == 1 and 0 not in cookies, cookies
        else:
            assert cookies == {0}
            assert len(re.findall(r"core scheduling is not available", text)) == 1, text
            assert "CONFIG_SCHED_CORE" in text
    finally:
        proc.kill()
        proc.wait(10)
