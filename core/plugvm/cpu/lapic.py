"""The local APIC's LINT pins, wired as on a PC (SDM vol. 3A, 10.5.1, LVT)."""

import struct

APIC_LVT_LINT0 = 0x350
APIC_LVT_LINT1 = 0x360
DELIVERY_MODE_SHIFT = 8
APIC_MODE_EXTINT = 0x7   # LINT0 takes the 8259's interrupts
APIC_MODE_NMI = 0x4      # LINT1 delivers NMIs


def _set_mode(regs: bytearray, offset: int, mode: int) -> None:
    (value,) = struct.unpack_from("<I", regs, offset)
    value = (value & ~(0x700)) | (mode << DELIVERY_MODE_SHIFT)
    struct.pack_into("<I", regs, offset, value)


def set_lint(vcpu) -> None:
    regs = vcpu.get_lapic()
    _set_mode(regs, APIC_LVT_LINT0, APIC_MODE_EXTINT)
    _set_mode(regs, APIC_LVT_LINT1, APIC_MODE_NMI)
    vcpu.set_lapic(bytes(regs))
