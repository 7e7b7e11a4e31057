"""The kernel's name for the calling thread (what `ps -T` and /proc/PID/task/TID/comm
show), which Python's threading does not set. cloud-hypervisor's tests count a VMM's
host threads by these names (`vcpu<N>`)."""

from __future__ import annotations

import threading

from plugvm.logs import get_logger

log = get_logger(__name__)
TASK_COMM_LEN = 16          # including the NUL: the kernel keeps 15 bytes


def name_this_thread(name: str) -> None:
    """Set the calling thread's kernel name to the first 15 bytes of `name`."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "wb") as comm:
            comm.write(name.encode()[:TASK_COMM_LEN - 1])
    except OSError as e:            # a kernel without /proc: the name only helps humans
        log.debug("thread name not set", name=name, error=str(e))
