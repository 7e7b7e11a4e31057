"""Resource data for _CRS and friends (ACPI 6.5, 6.4 "Resource Data Types for
ACPI"): the descriptor base, and ResourceTemplate, the Buffer that holds the
descriptors and ends with an End Tag."""

from __future__ import annotations

import struct
from abc import ABC, abstractmethod

from plugvm.acpi.aml_data import Buffer
from plugvm.acpi.errors import AmlError

END_TAG = 0x79     # small item 0x0F, length 1 (6.4.2.9)


def small_item(name: int, data: bytes) -> bytes:
    """A small resource item (6.4.2): bits 6:3 item name, bits 2:0 its data length."""
    return bytes([(name << 3) | len(data)]) + data


def large_item(name: int, data: bytes) -> bytes:
    """A large resource item (6.4.3): bit 7 set, bits 6:0 item name, a 16-bit length."""
    return struct.pack("<BH", 0x80 | name, len(data)) + data


def check_range(what: str, value: int, bits: int) -> int:
    """value itself, once it is known to fit an unsigned field of that many bits."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 1 << bits:
        raise AmlError(f"{what} {value!r} does not fit {bits} bits")
    return value


class Descriptor(ABC):
    """One resource descriptor inside a ResourceTemplate."""

    @abstractmethod
    def to_bytes(self) -> bytes:
        """The descriptor's bytes, tag included."""

    def __bytes__(self) -> bytes:
        return self.to_bytes()


class EndTag(Descriptor):
    """The End Tag that closes a resource list (6.4.2.9). Its checksum byte is either 0,
    which the spec says counts as a valid checksum and which iasl and ACPICA's resource
    manager always write, or the byte that makes the whole list sum to zero."""

    def __init__(self, preceding: bytes = b"", checksum: bool = False):
        self.checksum = -(sum(preceding) + END_TAG) & 0xFF if checksum else 0

    def to_bytes(self) -> bytes:
        return bytes([END_TAG, self.checksum])


class ResourceTemplate(Buffer):
    """ResourceTemplate () {descriptors}: a Buffer of the descriptors and an End Tag.
    checksum=False (the default) writes 0 as iasl does, so that our AML is what iasl
    compiles from the same ASL, and ACPICA's resource round trip (acpiexec Resources)
    reproduces it; checksum=True computes the real one."""

    def __init__(self, *descriptors: Descriptor, checksum: bool = False):
        self.descriptors = list(descriptors)
        data = b"".join(d.to_bytes() for d in descriptors)
        super().__init__(data + EndTag(data, checksum).to_bytes())
