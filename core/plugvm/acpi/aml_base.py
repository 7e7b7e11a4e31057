"""What every AML object shares (ACPI 6.5, chapter 20 "ACPI Machine Language
Specification"): rendering to bytes, and PkgLength."""

from __future__ import annotations

from abc import ABC, abstractmethod

from plugvm.acpi.errors import AmlError

PKG_LENGTH_MAX = (1 << 28) - 1     # four bytes: 4 bits in the lead byte, 8 in each of three more


class Aml(ABC):
    """An AML term or data object; bytes(obj) is the same as obj.to_bytes()."""

    @abstractmethod
    def to_bytes(self) -> bytes:
        """The object's AML encoding."""

    def __bytes__(self) -> bytes:
        return self.to_bytes()


def encode_pkg_length(value: int) -> bytes:
    """The PkgLength encoding of value (20.2.4): one byte holds 0..63; longer forms
    put the count of following bytes in bits 7:6, the low nibble in bits 3:0 and
    the rest in the following bytes, little-endian."""
    if value < 0x40:
        return bytes([value])
    if value > PKG_LENGTH_MAX:
        raise AmlError(f"AML package length {value} is beyond PkgLength's {PKG_LENGTH_MAX}")
    extra = 1 if value < 1 << 12 else 2 if value < 1 << 20 else 3
    return bytes([(extra << 6) | (value & 0xF)]) + (value >> 4).to_bytes(extra, "little")


def pkg_length(body_len: int) -> bytes:
    """The PkgLength in front of a body of body_len bytes: it counts itself too,
    so its own size decides its value (a 63-byte body needs 2 bytes: 65)."""
    for size in (1, 2, 3, 4):
        encoded = encode_pkg_length(body_len + size)
        if len(encoded) == size:
            return encoded
    raise AmlError(f"AML package body of {body_len} bytes is too long")


def with_pkg_length(opcode: bytes, body: bytes) -> bytes:
    """opcode PkgLength body: the shape of Scope, Device, Method, Buffer, Package, If..."""
    return opcode + pkg_length(len(body)) + body
