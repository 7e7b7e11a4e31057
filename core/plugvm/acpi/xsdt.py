"""The Extended System Description Table (ACPI 6.5, 5.2.8): the 64-bit addresses of
every other table but the DSDT, which the FADT points at."""

from __future__ import annotations

import struct

from plugvm.acpi.sdt import SystemTable


class Xsdt(SystemTable):
    """XSDT, revision 1: one 64-bit address per table."""

    SIGNATURE, REVISION = b"XSDT", 1

    def __init__(self, addresses: list[int]):
        self.addresses = list(addresses)

    def body(self) -> bytes:
        return struct.pack(f"<{len(self.addresses)}Q", *self.addresses)
