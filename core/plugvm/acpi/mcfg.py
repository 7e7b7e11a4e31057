"""The PCI Express memory-mapped configuration table, MCFG (PCI Firmware Specification
3.2, 4.1.2): where each segment's ECAM window lies. Linux uses it to reach
configuration space by memory instead of ports 0xCF8/0xCFC, and needs it (with the
window reserved by a PNP0C02 device, pci_aml.mmconfig_reservation) to see extended
configuration space at all."""

from __future__ import annotations

import struct
from typing import Iterable

from plugvm.acpi.errors import AcpiError
from plugvm.acpi.sdt import SystemTable

RESERVED = bytes(8)                    # after the header (Table 4-2)
_ALLOCATION = struct.Struct("<QHBBI")  # base, segment, start bus, end bus, reserved (Table 4-3)


class Mcfg(SystemTable):
    """MCFG, revision 1, with one configuration space allocation per segment:
    (segment, ECAM base address, start bus, end bus). The base is the address of bus 0
    even when start_bus is not 0 (Table 4-3). cloud-hypervisor gives every segment
    bus 0..0 at layout.PCI_MMCONFIG_START + segment * 1 MiB (vmm/src/acpi.rs)."""

    SIGNATURE, REVISION = b"MCFG", 1

    def __init__(self, segments: Iterable[tuple[int, int, int, int]]):
        self.segments = [tuple(s) for s in segments]
        seen = set()
        for segment, base, start_bus, end_bus in self.segments:
            if not 0 <= segment <= 0xFFFF or segment in seen:
                raise AcpiError(f"MCFG: segment {segment!r} is out of 0..0xFFFF or listed twice")
            if not 0 <= start_bus <= end_bus <= 0xFF:
                raise AcpiError(f"MCFG: segment {segment} buses {start_bus}..{end_bus} are not within 0..255")
            if not 0 <= base < 1 << 64 or base % (1 << 20):
                raise AcpiError(f"MCFG: segment {segment} base {base:#x} is not a 1 MiB-aligned 64-bit address")
            seen.add(segment)

    def body(self) -> bytes:
        return RESERVED + b"".join(_ALLOCATION.pack(base, segment, start, end, 0)
                                   for segment, base, start, end in self.segments)
