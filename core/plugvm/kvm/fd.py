"""A KVM file descriptor and the one helper that turns a failed ioctl into KvmError."""

from __future__ import annotations

import os

from plugvm.kvm._kvm import ffi, lib
from plugvm.kvm.errors import KvmError


class KvmFd:
    """Owns one KVM file descriptor (system, VM or vCPU)."""

    def __init__(self, fd: int):
        self.fd = fd

    def ioctl(self, name: str, arg=None) -> int:
        """Call ioctl `name` (a KVM_* macro) with a cdata pointer, an int or nothing.

        cffi releases the GIL for the duration of the call, so a vCPU thread in
        KVM_RUN does not hold up the others.
        """
        request = getattr(lib, name)
        if arg is None or isinstance(arg, int):
            rc = lib.plugvm_ioctl_int(self.fd, request, arg or 0)
        else:
            rc = lib.plugvm_ioctl(self.fd, request, arg)
        if rc < 0:
            raise KvmError(ffi.errno, name)
        return rc

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
