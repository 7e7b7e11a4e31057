"""The Generic Address Structure (ACPI 6.5, 5.2.3.2): how the FADT names a register."""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum


class AddressSpace(IntEnum):
    """Address Space ID (Table 5.1), those we use."""

    SYSTEM_MEMORY = 0
    SYSTEM_IO = 1


class AccessSize(IntEnum):
    """Access Size (Table 5.1): the width of each access to the register."""

    UNDEFINED = 0
    BYTE = 1
    WORD = 2
    DWORD = 3
    QWORD = 4


@dataclass(frozen=True)
class GenericAddress:
    """A register: its space, width in bits, bit offset, access size and address."""

    space: AddressSpace
    bit_width: int
    address: int
    bit_offset: int = 0
    access_size: AccessSize = AccessSize.UNDEFINED

    SIZE = 12

    @classmethod
    def io_port(cls, port: int, bit_width: int) -> GenericAddress:
        """An I/O port register accessed whole (8, 16, 32 or 64 bits at a time)."""
        access = {8: AccessSize.BYTE, 16: AccessSize.WORD, 32: AccessSize.DWORD, 64: AccessSize.QWORD}[bit_width]
        return cls(AddressSpace.SYSTEM_IO, bit_width, port, 0, access)

    def to_bytes(self) -> bytes:
        return struct.pack("<BBBBQ", self.space, self.bit_width, self.bit_offset, self.access_size, self.address)
