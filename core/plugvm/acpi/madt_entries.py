"""The MADT's interrupt controller structures (ACPI 6.5, 5.2.12.2 onwards) that an
x86 VM with one IOAPIC needs. Each renders its bytes with to_bytes()."""

from __future__ import annotations

import struct
from dataclasses import dataclass

LOCAL_APIC, IO_APIC, INTERRUPT_SOURCE_OVERRIDE, LOCAL_X2APIC = 0, 1, 2, 9     # Table 5.21
ENABLED = 1 << 0
ONLINE_CAPABLE = 1 << 1      # ACPI 6.3, MADT revision 5: may be enabled at runtime; only when not ENABLED


@dataclass(frozen=True)
class LocalApic:
    """Processor Local APIC (5.2.12.2), for APIC ids below 255."""

    processor_uid: int
    apic_id: int
    flags: int

    def to_bytes(self) -> bytes:
        return struct.pack("<BBBBI", LOCAL_APIC, 8, self.processor_uid, self.apic_id, self.flags)


@dataclass(frozen=True)
class LocalX2Apic:
    """Processor Local x2APIC (5.2.12.12), for APIC ids of 255 and more. Its bytes are
    also what a CPU's _MAT returns."""

    processor_uid: int
    x2apic_id: int
    flags: int

    def to_bytes(self) -> bytes:
        return struct.pack("<BBHIII", LOCAL_X2APIC, 16, 0, self.x2apic_id, self.flags, self.processor_uid)


@dataclass(frozen=True)
class IoApic:
    """I/O APIC (5.2.12.3): its id, MMIO address and first GSI."""

    ioapic_id: int
    address: int
    gsi_base: int

    def to_bytes(self) -> bytes:
        return struct.pack("<BBBBII", IO_APIC, 12, self.ioapic_id, 0, self.address, self.gsi_base)


@dataclass(frozen=True)
class InterruptSourceOverride:
    """Interrupt Source Override (5.2.12.5): ISA IRQ `source` arrives on `gsi`; flags 0
    means polarity and trigger "conform to the bus" (ISA: edge, active high)."""

    source: int
    gsi: int
    flags: int = 0
    bus: int = 0             # ISA

    def to_bytes(self) -> bytes:
        return struct.pack("<BBBBIH", INTERRUPT_SOURCE_OVERRIDE, 10, self.bus, self.source, self.gsi, self.flags)
