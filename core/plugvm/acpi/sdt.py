"""The header every system description table starts with (ACPI 6.5, 5.2.6), and the
base class of our tables, which fills in its length and checksum."""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from plugvm.acpi.errors import AcpiError

OEM_ID = b"CLOUDH"            # cloud-hypervisor's, so that guests see the firmware they expect
OEM_TABLE_ID = b"PLUGVM  "    # ours, the same on every table (as QEMU's "BXPC    ")
OEM_REVISION = 1
CREATOR_ID = b"PLVM"          # normally the ASL compiler's vendor; here, the builder's
CREATOR_REVISION = 1
CHECKSUM_OFFSET = 9
_HEADER = struct.Struct("<4sIBB6s8sI4sI")


def checksum(data: bytes) -> int:
    """The byte that, added to data, makes it sum to zero modulo 256."""
    return -sum(data) & 0xFF


@dataclass(frozen=True)
class SdtHeader:
    """The 36-byte header's fields (Table 5.4)."""

    SIZE: ClassVar[int] = _HEADER.size

    signature: bytes
    length: int
    revision: int
    checksum: int
    oem_id: bytes
    oem_table_id: bytes
    oem_revision: int
    creator_id: bytes
    creator_revision: int

    @classmethod
    def unpack(cls, table: bytes) -> SdtHeader:
        if len(table) < _HEADER.size:
            raise AcpiError(f"a {len(table)}-byte table is shorter than its {_HEADER.size}-byte header")
        return cls(*_HEADER.unpack_from(table))

    def pack(self) -> bytes:
        return _HEADER.pack(self.signature, self.length, self.revision, self.checksum, self.oem_id,
                            self.oem_table_id, self.oem_revision, self.creator_id, self.creator_revision)


class SystemTable(ABC):
    """A system description table: subclasses give SIGNATURE, REVISION and body();
    to_bytes() puts the header in front and fixes up length and checksum."""

    SIGNATURE: ClassVar[bytes]
    REVISION: ClassVar[int]

    @abstractmethod
    def body(self) -> bytes:
        """Everything after the header."""

    def to_bytes(self) -> bytes:
        body = self.body()
        header = SdtHeader(self.SIGNATURE, SdtHeader.SIZE + len(body), self.REVISION, 0, OEM_ID, OEM_TABLE_ID,
                           OEM_REVISION, CREATOR_ID, CREATOR_REVISION)
        table = bytearray(header.pack() + body)
        table[CHECKSUM_OFFSET] = checksum(table)
        return bytes(table)

    def __bytes__(self) -> bytes:
        return self.to_bytes()
