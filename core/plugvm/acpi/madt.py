"""The Multiple APIC Description Table (ACPI 6.5, 5.2.12): the local APICs of every
*possible* vCPU, so that hotplugged CPUs already have a place, and the IOAPIC."""

from __future__ import annotations

import struct
from collections.abc import Sequence

from plugvm import layout
from plugvm.acpi.errors import AcpiError
from plugvm.acpi.madt_entries import (ENABLED, ONLINE_CAPABLE, InterruptSourceOverride, IoApic, LocalApic,
                                      LocalX2Apic)
from plugvm.acpi.sdt import SystemTable

PCAT_COMPAT = 0      # not set: see Madt
FIRST_X2APIC_ID = 255    # 5.2.12.12: ids of 255 and more need the x2APIC structure (0xFF is xAPIC broadcast)
PIT_IRQ, PIT_GSI = 0, 2  # the PIT reaches IOAPIC pin 2 (machine.legacy_routes), as on PC firmware


def processor_entry(index: int, boot_cpus: int, apic_id: int | None = None) -> LocalApic | LocalX2Apic:
    """vCPU `index`'s structure: its ACPI processor UID is the index, its APIC id
    `apic_id` (plugvm.cpu.topology; the index when not given). Boot vCPUs are Enabled;
    the others Online Capable, which Linux needs to count them as possible CPUs
    (acpi_is_processor_usable(), for MADT revision 5 and later)."""
    apic_id = index if apic_id is None else apic_id
    flags = ENABLED if index < boot_cpus else ONLINE_CAPABLE
    if apic_id < FIRST_X2APIC_ID:
        return LocalApic(processor_uid=index, apic_id=apic_id, flags=flags)
    return LocalX2Apic(processor_uid=index, x2apic_id=apic_id, flags=flags)


class Madt(SystemTable):
    """APIC, revision 5 (ACPI 6.3 added Online Capable): one processor structure per
    possible vCPU in index order (with apic_ids[i] as CPU i's APIC id, the index
    when apic_ids is None), one IOAPIC (id 0, GSIs from 0) and the override
    that moves IRQ 0 to GSI 2. No override for the SCI (IRQ 9 on PCs): a hardware-reduced
    platform has none. The other ISA IRQs are identity-mapped by default.

    PCAT_COMPAT is clear although KVM's in-kernel 8259s exist: a hardware-reduced
    platform has no legacy PIC to offer (Linux replaces it with null_legacy_pic in
    acpi_generic_reduced_hw_init()), and the VMM routes every ISA line to the IOAPIC
    too (machine.legacy_routes), so nothing needs the 8259s."""

    SIGNATURE, REVISION = b"APIC", 5

    def __init__(self, boot_cpus: int, max_cpus: int, lapic_addr: int = layout.APIC_START,
                 ioapic_addr: int = layout.IOAPIC_START, apic_ids: Sequence[int] | None = None):
        if not 1 <= boot_cpus <= max_cpus:
            raise AcpiError(f"MADT: boot_cpus={boot_cpus} max_cpus={max_cpus}: need 1 <= boot <= max")
        if max_cpus > 1 << 32:
            raise AcpiError(f"MADT: max_cpus={max_cpus} exceeds the 32-bit x2APIC id space")
        if apic_ids is None:
            apic_ids = range(max_cpus)
        if len(apic_ids) != max_cpus or len(set(apic_ids)) != max_cpus:
            raise AcpiError(f"MADT: {len(apic_ids)} APIC ids for max_cpus={max_cpus}, or an id given twice")
        if max(apic_ids) >= 1 << 32:
            raise AcpiError(f"MADT: APIC id {max(apic_ids):#x} exceeds the 32-bit x2APIC id space")
        self.entries = [processor_entry(i, boot_cpus, apic_id) for i, apic_id in enumerate(apic_ids)]
        self.entries += [IoApic(ioapic_id=0, address=ioapic_addr, gsi_base=0),
                         InterruptSourceOverride(source=PIT_IRQ, gsi=PIT_GSI)]
        self.lapic_addr = lapic_addr

    def body(self) -> bytes:
        return struct.pack("<II", self.lapic_addr, PCAT_COMPAT) + b"".join(e.to_bytes() for e in self.entries)
