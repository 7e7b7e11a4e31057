"""The boot vCPU's initial state for a 32-bit protected-mode entry (boot.rst, "32-bit
BOOT PROTOCOL"): flat 4 GiB code and data segments, paging and interrupts off."""

from __future__ import annotations

import struct

from plugvm import layout
from plugvm.boot.loader import EntryPoint

# GDT entries as cloud-hypervisor sets them: null, null, code (0x10), data (0x18), TSS (0x20).
_GDT = [(0, 0, 0), (0, 0, 0), (0xC09B, 0, 0xFFFFF), (0xC093, 0, 0xFFFFF), (0x008B, 0, 0xFFFFF)]
CODE_SELECTOR, DATA_SELECTOR, TSS_SELECTOR = 0x10, 0x18, 0x20
X86_CR0_PE = 0x1
RFLAGS_RESERVED = 0x2     # bit 1 always reads as one


def gdt_entry(flags: int, base: int, limit: int) -> int:
    """A segment descriptor from cloud-hypervisor-style (flags, base, limit) (SDM 3.4.5)."""
    return (((base & 0xFF000000) << 32) | ((flags & 0xF0FF) << 40) | ((limit & 0xF0000) << 32)
            | ((base & 0x00FFFFFF) << 16) | (limit & 0x0000FFFF))


def write_gdt(memory) -> None:
    memory.write(layout.GDT_START, b"".join(struct.pack("<Q", gdt_entry(*e)) for e in _GDT))
    memory.write(layout.IDT_START, bytes(8))


def setup_boot_vcpu(vcpu, memory, entry: EntryPoint) -> None:
    """Registers of the vCPU that boots the kernel (the others wait for INIT/SIPI)."""
    write_gdt(memory)
    sregs = vcpu.get_sregs()
    for name, (flags, base, limit), sel in (("cs", _GDT[2], CODE_SELECTOR), ("ds", _GDT[3], DATA_SELECTOR),
                                            ("es", _GDT[3], DATA_SELECTOR), ("fs", _GDT[3], DATA_SELECTOR),
                                            ("gs", _GDT[3], DATA_SELECTOR), ("ss", _GDT[3], DATA_SELECTOR),
                                            ("tr", _GDT[4], TSS_SELECTOR)):
        _descriptor_to_segment(getattr(sregs, name), flags, base, limit, sel)
    sregs.gdt.base = layout.GDT_START
    sregs.gdt.limit = len(_GDT) * 8 - 1
    sregs.idt.base = layout.IDT_START
    sregs.idt.limit = 7
    sregs.cr0 = X86_CR0_PE
    sregs.cr4 = 0
    sregs.efer = 0
    vcpu.set_sregs(sregs)

    regs = vcpu.get_regs()
    regs.rip = entry.rip
    regs.rsi = entry.rsi
    regs.rbx = entry.rbx
    regs.rsp = regs.rbp = layout.BOOT_STACK_POINTER
    regs.rflags = RFLAGS_RESERVED
    vcpu.set_regs(regs)


def _descriptor_to_segment(seg, flags: int, base: int, limit: int, selector: int) -> None:
    """flags as in a descriptor's bytes 5–6: P/DPL/S/type low byte, G/DB/L/AVL high nibble."""
    access, high = flags & 0xFF, (flags >> 12) & 0xF
    granular = bool(high & 0x8)
    seg.base = base
    seg.limit = (limit << 12) | 0xFFF if granular else limit
    seg.selector = selector
    seg.type = access & 0xF
    seg.s = (access >> 4) & 1
    seg.dpl = (access >> 5) & 3
    seg.present = (access >> 7) & 1
    seg.avl = high & 1
    seg.l = (high >> 1) & 1
    seg.db = (high >> 2) & 1
    seg.g = (high >> 3) & 1
    seg.unusable = 0 if seg.present else 1
