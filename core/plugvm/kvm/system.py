"""/dev/kvm: the system-level KVM file descriptor."""

from __future__ import annotations

import errno
import os

from plugvm.kvm._kvm import ffi, lib
from plugvm.kvm.errors import KvmError
from plugvm.kvm.fd import KvmFd


class Kvm(KvmFd):
    """The opened /dev/kvm."""

    def __init__(self, path: str = "/dev/kvm"):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        except OSError as e:
            raise KvmError(e.errno, "open", path) from e
        super().__init__(fd)
        version = self.ioctl("KVM_GET_API_VERSION")
        if version != lib.KVM_API_VERSION:
            self.close()
            raise KvmError(errno.EINVAL, "KVM_GET_API_VERSION", f"version {version}, expected {lib.KVM_API_VERSION}")
        self.vcpu_mmap_size = self.ioctl("KVM_GET_VCPU_MMAP_SIZE")

    def check_extension(self, cap: str) -> int:
        """The value KVM reports for capability `cap` (a KVM_CAP_* name); 0 if absent."""
        return self.ioctl("KVM_CHECK_EXTENSION", getattr(lib, cap))

    def supported_cpuid(self) -> list[tuple[int, int, int, int, int, int, int]]:
        """KVM_GET_SUPPORTED_CPUID as (function, index, flags, eax, ebx, ecx, edx) tuples."""
        n = 64
        while True:
            cpuid = ffi.new("struct kvm_cpuid2 *", {"nent": n, "entries": n})
            cpuid.nent = n
            try:
                self.ioctl("KVM_GET_SUPPORTED_CPUID", cpuid)
                break
            except KvmError as e:
                if e.errno != errno.E2BIG or n >= 4096:
                    raise
                n *= 2
        return [(e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx)
                for e in (cpuid.entries[i] for i in range(cpuid.nent))]

    def create_vm(self):
        from plugvm.kvm.vm import Vm

        return Vm(self, self.ioctl("KVM_CREATE_VM", 0))
