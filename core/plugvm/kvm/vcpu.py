"""A KVM vCPU file descriptor, its shared run page, and KVM_RUN."""

from __future__ import annotations

import errno
import mmap

from plugvm.kvm import exits
from plugvm.kvm._kvm import ffi, lib
from plugvm.kvm.errors import KvmError
from plugvm.kvm.fd import KvmFd

_SYSTEM_EVENTS = {lib.KVM_SYSTEM_EVENT_SHUTDOWN: "shutdown", lib.KVM_SYSTEM_EVENT_RESET: "reset",
                  lib.KVM_SYSTEM_EVENT_CRASH: "crash"}


class Vcpu(KvmFd):
    """One vCPU. run() enters the guest and returns the next exit, decoded."""

    def __init__(self, vm, index: int, fd: int):
        super().__init__(fd)
        self.vm = vm
        self.index = index
        self._page = mmap.mmap(fd, vm.kvm.vcpu_mmap_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        self._view = memoryview(self._page)
        self._base = base = ffi.from_buffer(self._page)
        self._exit_reason = ffi.cast("uint32_t *", base + lib.plugvm_run_exit_reason)
        self._immediate_exit = ffi.cast("uint8_t *", base + lib.plugvm_run_immediate_exit)
        union = base + lib.plugvm_run_union
        self._io = ffi.cast("struct kvm_run_io *", union)
        self._mmio = ffi.cast("struct kvm_run_mmio *", union)
        self._internal = ffi.cast("struct kvm_run_internal *", union)
        self._emulation = ffi.cast("struct kvm_run_emulation_failure *", union)
        self._event = ffi.cast("struct kvm_run_system_event *", union)
        self._fail = ffi.cast("struct kvm_run_fail_entry *", union)
        self._mmio_data_offset = lib.plugvm_run_union + ffi.offsetof("struct kvm_run_mmio", "data")

    def set_immediate_exit(self, value: bool) -> None:
        """With it set, KVM_RUN returns at once (used to stop a vCPU without a race)."""
        self._immediate_exit[0] = 1 if value else 0

    def run(self) -> exits.Exit:
        try:
            self.ioctl("KVM_RUN")
        except KvmError as e:
            if e.errno in (errno.EINTR, errno.EAGAIN):
                return exits.Interrupted()
            raise
        reason = self._exit_reason[0]
        if reason == lib.KVM_EXIT_IO:
            io = self._io
            start = io.data_offset
            data = self._view[start:start + io.size * io.count]
            return exits.IoExit(io.port, io.size, io.count, io.direction == lib.KVM_EXIT_IO_OUT, data)
        if reason == lib.KVM_EXIT_MMIO:
            m = self._mmio
            data = self._view[self._mmio_data_offset:self._mmio_data_offset + m.len]
            return exits.MmioExit(m.phys_addr, bool(m.is_write), data)
        if reason == lib.KVM_EXIT_INTR:
            return exits.Interrupted()
        if reason == lib.KVM_EXIT_HLT:
            return exits.Halt()
        if reason == lib.KVM_EXIT_SHUTDOWN:
            return exits.Shutdown()
        if reason == lib.KVM_EXIT_SYSTEM_EVENT:
            return exits.SystemEvent(_SYSTEM_EVENTS.get(self._event.type, str(self._event.type)))
        if reason == lib.KVM_EXIT_INTERNAL_ERROR:
            return self._internal_error()
        if reason == lib.KVM_EXIT_FAIL_ENTRY:
            return exits.FailEntry(self._fail.hardware_entry_failure_reason)
        return exits.Unhandled(reason)

    def _internal_error(self) -> exits.InternalError:
        internal = self._internal
        insn = b""
        if (internal.suberror == lib.KVM_INTERNAL_ERROR_EMULATION and internal.ndata >= 2
                and self._emulation.flags & lib.KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES):
            e = self._emulation
            insn = bytes(e.insn_bytes[0:min(e.insn_size, 15)])
        ndata = min(internal.ndata, 16)
        return exits.InternalError(internal.suberror, insn, tuple(internal.data[i] for i in range(ndata)))

    # -- state -----------------------------------------------------------------------------------

    def get_regs(self):
        regs = ffi.new("struct kvm_regs *")
        self.ioctl("KVM_GET_REGS", regs)
        return regs

    def set_regs(self, regs) -> None:
        self.ioctl("KVM_SET_REGS", regs)

    def get_sregs(self):
        sregs = ffi.new("struct kvm_sregs *")
        self.ioctl("KVM_GET_SREGS", sregs)
        return sregs

    def set_sregs(self, sregs) -> None:
        self.ioctl("KVM_SET_SREGS", sregs)

    def set_fpu(self, fcw: int, mxcsr: int) -> None:
        fpu = ffi.new("struct kvm_fpu *", {"fcw": fcw, "mxcsr": mxcsr})
        self.ioctl("KVM_SET_FPU", fpu)

    def set_cpuid(self, entries: list[tuple[int, int, int, int, int, int, int]]) -> None:
        cpuid = ffi.new("struct kvm_cpuid2 *", {"entries": len(entries)})
        cpuid.nent = len(entries)
        for i, (function, index, flags, eax, ebx, ecx, edx) in enumerate(entries):
            e = cpuid.entries[i]
            e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx = function, index, flags, eax, ebx, ecx, edx
        self.ioctl("KVM_SET_CPUID2", cpuid)

    def set_msrs(self, msrs: dict[int, int]) -> None:
        table = ffi.new("struct kvm_msrs *", {"entries": len(msrs)})
        table.nmsrs = len(msrs)
        for i, (index, data) in enumerate(msrs.items()):
            table.entries[i].index = index
            table.entries[i].data = data
        written = self.ioctl("KVM_SET_MSRS", table)
        if written != len(msrs):
            failed = list(msrs)[written]
            raise KvmError(errno.EINVAL, "KVM_SET_MSRS", f"MSR {failed:#x} was refused")

    def get_lapic(self) -> bytearray:
        state = ffi.new("struct kvm_lapic_state *")
        self.ioctl("KVM_GET_LAPIC", state)
        return bytearray(ffi.buffer(state.regs))

    def set_lapic(self, regs: bytes) -> None:
        state = ffi.new("struct kvm_lapic_state *")
        ffi.memmove(state.regs, regs, len(regs))
        self.ioctl("KVM_SET_LAPIC", state)

    def close(self) -> None:
        self._view.release()
        ffi.release(self._base)
        self._page.close()
        super().close()
