"""ACPI tables for the guest, from our own AML builder (plugvm.acpi.aml).

build() lays them out as cloud-hypervisor does (vmm/src/acpi.rs): the RSDP at
0xA0000, then DSDT, FACP, APIC, any extra tables, and the XSDT last; each table
starts on a 16-byte boundary. The boot code copies AcpiImage.blob to rsdp_addr and
passes rsdp_addr to the kernel; the range must be reserved in the e820 map.
"""

from __future__ import annotations

from dataclasses import dataclass

from plugvm.acpi.dsdt import Dsdt
from plugvm.acpi.errors import AcpiError, AmlError
from plugvm.acpi.fadt import Fadt
from plugvm.acpi.madt import Madt
from plugvm.acpi.mcfg import Mcfg
from plugvm.acpi.pci_aml import pci_segment_aml, pci_segments_aml
from plugvm.acpi.placement import ALIGNMENT, Placement
from plugvm.acpi.platform_aml import platform_fragments
from plugvm.acpi.rsdp import Rsdp
from plugvm.acpi.sdt import SdtHeader, checksum
from plugvm.acpi.xsdt import Xsdt

__all__ = ["AcpiError", "AcpiImage", "AcpiPlatform", "AmlError", "Mcfg", "build", "pci_segment_aml", "pci_segments_aml"]
OWN_SIGNATURES = ("RSDP", "XSDT", "FACP", "APIC", "DSDT")


@dataclass(frozen=True)
class AcpiPlatform:
    """What the tables describe. dsdt_fragments are AML objects from other components,
    appended to the platform's own; extra_tables are complete SDTs (bytes, or objects
    with to_bytes()) listed in the XSDT after FACP and APIC, with distinct signatures.
    com1 says whether the DSDT declares the serial port (absent with --serial off);
    apic_ids[i] is CPU i's APIC id (plugvm.cpu.topology), the index when empty."""

    boot_cpus: int
    max_cpus: int
    rsdp_addr: int = 0xA0000
    limit: int = 0x100000        # the tables must end at or below this (the region is reserved in e820)
    dsdt_fragments: tuple = ()
    extra_tables: tuple = ()
    com1: bool = True
    apic_ids: tuple = ()

    def __post_init__(self):
        if not 1 <= self.boot_cpus <= self.max_cpus:
            raise AcpiError(f"AcpiPlatform: boot_cpus={self.boot_cpus}, max_cpus={self.max_cpus}: "
                            f"need 1 <= boot_cpus <= max_cpus")
        if self.rsdp_addr < 0 or self.rsdp_addr % ALIGNMENT:
            raise AcpiError(f"AcpiPlatform: rsdp_addr={self.rsdp_addr:#x} is not on a 16-byte boundary")


@dataclass(frozen=True)
class AcpiImage:
    """The built tables: blob goes to guest physical rsdp_addr; tables maps each
    signature ("RSDP", "XSDT", "FACP", "APIC", "DSDT" and the extras) to its bytes."""

    rsdp_addr: int
    blob: bytes
    tables: dict[str, bytes]


def _extra_table(table: object) -> tuple[str, bytes]:
    data = bytes(table) if isinstance(table, (bytes, bytearray)) else table.to_bytes()
    header = SdtHeader.unpack(data)
    signature = header.signature.decode("ascii", "replace")
    if header.length != len(data) or checksum(data):
        raise AcpiError(f"extra ACPI table {signature!r}: its length field or checksum is wrong")
    if signature in OWN_SIGNATURES:
        raise AcpiError(f"extra ACPI table {signature!r} would replace plugvm's own")
    return signature, data


def build(platform: AcpiPlatform) -> AcpiImage:
    """Build and place every table; AcpiError if they would not end by platform.limit
    or an extra table is malformed or given twice."""
    extras = dict(_extra_table(t) for t in platform.extra_tables)
    if len(extras) != len(platform.extra_tables):
        raise AcpiError("extra ACPI tables must have distinct signatures")
    space = Placement(platform.rsdp_addr + Rsdp.SIZE)     # the tables follow the RSDP
    tables = {"DSDT": Dsdt(platform_fragments(platform.com1) + list(platform.dsdt_fragments)).to_bytes()}
    dsdt_addr = space.place(tables["DSDT"])
    tables["FACP"] = Fadt(dsdt_addr).to_bytes()
    tables["APIC"] = Madt(platform.boot_cpus, platform.max_cpus, apic_ids=platform.apic_ids or None).to_bytes()
    tables.update(extras)
    listed = [space.place(tables[sig]) for sig in ["FACP", "APIC", *extras]]
    tables["XSDT"] = Xsdt(listed).to_bytes()
    xsdt_addr = space.place(tables["XSDT"])
    if space.end > platform.limit:
        raise AcpiError(f"the ACPI tables would end at {space.end:#x}, past the limit {platform.limit:#x}")
    tables["RSDP"] = Rsdp(xsdt_addr).to_bytes()
    return AcpiImage(platform.rsdp_addr, tables["RSDP"] + space.blob(), tables)
