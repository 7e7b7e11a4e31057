"""A process's threads by their kernel names, as cloud-hypervisor's tests count a VMM's
vCPU threads (`ps -T`, names containing "vcpu")."""

from __future__ import annotations

import os
import time


def named_threads(pid: int, prefix: str) -> list[str]:
    """The sorted kernel names of pid's threads that start with prefix."""
    names = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/comm") as f:
                names.append(f.read().strip())
        except FileNotFoundError:
            pass            # a thread that just ended
    return sorted(n for n in names if n.startswith(prefix))


def vcpu_threads(pid: int) -> list[str]:
    return named_threads(pid, "vcpu")


def threads_become(pid: int, expected: list[str], seconds: float = 5.0, prefix: str = "vcpu") -> list[str]:
    """The prefix threads once they match `expected` (they start, or end, and name
    themselves a moment after the call that made them), or when the time is up."""
    deadline = time.monotonic() + seconds
    while named_threads(pid, prefix) != expected and time.monotonic() < deadline:
        time.sleep(0.02)
    return named_threads(pid, prefix)
