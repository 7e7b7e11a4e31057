"""The fixed-layout resource descriptors (ACPI 6.5, 6.4.2 and 6.4.3): I/O ports,
interrupts and fixed memory ranges. Address space descriptors are in aml_address."""

from __future__ import annotations

import struct

from plugvm.acpi.aml_resources import Descriptor, check_range, large_item, small_item
from plugvm.acpi.errors import AmlError

IRQ_ITEM, IO_ITEM = 0x04, 0x08                          # small items
MEMORY32_FIXED_ITEM, EXTENDED_IRQ_ITEM = 0x06, 0x09     # large items


class Io(Descriptor):
    """IO (Decode16, min, max, alignment, length) (6.4.2.5): a range of I/O ports."""

    def __init__(self, minimum: int, maximum: int, alignment: int, length: int, decode16: bool = True):
        self.minimum = check_range("IO minimum", minimum, 16)
        self.maximum = check_range("IO maximum", maximum, 16)
        self.alignment = check_range("IO alignment", alignment, 8)
        self.length = check_range("IO length", length, 8)
        if maximum < minimum:
            raise AmlError(f"IO: maximum {maximum:#x} is below minimum {minimum:#x}")
        self.decode16 = decode16

    def to_bytes(self) -> bytes:
        return small_item(IO_ITEM, struct.pack("<BHHBB", int(self.decode16), self.minimum, self.maximum,
                                               self.alignment, self.length))


def _irq_mask(irqs: tuple[int, ...]) -> int:
    if not irqs:
        raise AmlError("an IRQ descriptor needs at least one IRQ")
    return sum(1 << check_range("ISA IRQ", irq, 4) for irq in set(irqs))


class IrqNoFlags(Descriptor):
    """IRQNoFlags () {4} (6.4.2.1): ISA IRQs, edge-triggered, active-high, exclusive."""

    def __init__(self, *irqs: int):
        self.mask = _irq_mask(irqs)

    def to_bytes(self) -> bytes:
        return small_item(IRQ_ITEM, struct.pack("<H", self.mask))


class Irq(Descriptor):
    """IRQ (Edge|Level, ActiveHigh|ActiveLow, Exclusive|Shared) {irqs} (6.4.2.1)."""

    def __init__(self, *irqs: int, edge: bool = True, active_low: bool = False, shared: bool = False,
                 wake: bool = False):
        self.mask = _irq_mask(irqs)
        self.flags = int(edge) | active_low << 3 | shared << 4 | wake << 5

    def to_bytes(self) -> bytes:
        return small_item(IRQ_ITEM, struct.pack("<HB", self.mask, self.flags))


class Interrupt(Descriptor):
    """Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) {gsis} (6.4.3.6): the
    Extended Interrupt descriptor, for GSIs beyond the ISA range (the GED's, for one)."""

    def __init__(self, *gsis: int, consumer: bool = True, edge: bool = True, active_low: bool = False,
                 shared: bool = False, wake: bool = False):
        if not 1 <= len(gsis) <= 255:
            raise AmlError(f"an Interrupt descriptor holds 1-255 interrupts, not {len(gsis)}")
        self.gsis = [check_range("interrupt", g, 32) for g in gsis]
        self.flags = int(consumer) | edge << 1 | active_low << 2 | shared << 3 | wake << 4

    def to_bytes(self) -> bytes:
        data = struct.pack(f"<BB{len(self.gsis)}I", self.flags, len(self.gsis), *self.gsis)
        return large_item(EXTENDED_IRQ_ITEM, data)


class Memory32Fixed(Descriptor):
    """Memory32Fixed (ReadWrite, base, length) (6.4.3.4): a fixed 32-bit memory range."""

    def __init__(self, base: int, length: int, read_write: bool = True):
        self.base = check_range("Memory32Fixed base", base, 32)
        self.length = check_range("Memory32Fixed length", length, 32)
        if base + length > 1 << 32:
            raise AmlError(f"Memory32Fixed {base:#x}+{length:#x} runs past 4 GiB")
        self.read_write = read_write

    def to_bytes(self) -> bytes:
        return large_item(MEMORY32_FIXED_ITEM, struct.pack("<BII", int(self.read_write), self.base, self.length))
