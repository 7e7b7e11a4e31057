"""--cpus core_scheduling=vm, as cloud-hypervisor's default: the VM's threads share one
core-scheduling cookie (Linux's PR_SCHED_CORE, Documentation/admin-guide/hw-vuln/
core-scheduling.rst), so that an SMT sibling never runs another process's code beside a
vCPU. Kernels built without CONFIG_SCHED_CORE (Debian's, among others) refuse the
prctl: the VM then runs without a cookie, said once in the log, as cloud-hypervisor
goes on."""

from __future__ import annotations

import ctypes
import errno
import os

from plugvm.logs import get_logger

log = get_logger(__name__)
PR_SCHED_CORE = 62
PR_SCHED_CORE_GET, PR_SCHED_CORE_CREATE = 0, 1
PIDTYPE_PID, PIDTYPE_TGID = 0, 1
_libc = ctypes.CDLL(None, use_errno=True)


def share_one_cookie() -> bool:
    """Give this process's threads (and those it starts later) one new cookie. False,
    logged, when the kernel has no core scheduling or refuses."""
    if _libc.prctl(PR_SCHED_CORE, PR_SCHED_CORE_CREATE, 0, PIDTYPE_TGID, 0) == 0:
        log.info("core scheduling: the VM's threads share one cookie", cookie=hex(cookie(0)))
        return True
    error = ctypes.get_errno()
    why = ("the kernel has no core scheduling (CONFIG_SCHED_CORE)" if error in (errno.EINVAL, errno.ENODEV)
           else os.strerror(error))
    log.info("core scheduling is not available; the VM runs without a cookie", why=why)
    return False


def cookie(tid: int) -> int:
    """The cookie of thread `tid` (0: the caller); 0 when it has none or the kernel has none."""
    value = ctypes.c_ulong(0)
    if _libc.prctl(PR_SCHED_CORE, PR_SCHED_CORE_GET, tid, PIDTYPE_PID, ctypes.byref(value)) != 0:
        return 0
    return value.value
