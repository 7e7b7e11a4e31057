"""The Root System Description Pointer, revision 2 (ACPI 6.5, 5.2.5.3): where the
guest starts, pointing at the XSDT."""

from __future__ import annotations

import struct

from plugvm.acpi.sdt import OEM_ID, checksum

SIGNATURE = b"RSD PTR "
REVISION = 2                  # ACPI 2.0 and later: has the XSDT address and the extended checksum
_RSDP = struct.Struct("<8sB6sBIIQB3x")
V1_SIZE = 20                  # the ACPI 1.0 part, which the first checksum covers
CHECKSUM_OFFSET, EXTENDED_CHECKSUM_OFFSET = 8, 32


class Rsdp:
    """The 36-byte RSDP; no RSDT (its 32-bit address is 0), only the XSDT."""

    SIZE = _RSDP.size

    def __init__(self, xsdt_addr: int):
        self.xsdt_addr = xsdt_addr

    def to_bytes(self) -> bytes:
        raw = bytearray(_RSDP.pack(SIGNATURE, 0, OEM_ID, REVISION, 0, _RSDP.size, self.xsdt_addr, 0))
        raw[CHECKSUM_OFFSET] = checksum(raw[:V1_SIZE])
        raw[EXTENDED_CHECKSUM_OFFSET] = checksum(raw)     # after the first: it covers it
        return bytes(raw)

    def __bytes__(self) -> bytes:
        return self.to_bytes()
