"""AML data objects (ACPI 6.5, 20.2.3 "Data Objects Encoding"): integers, strings,
buffers and packages, and the conversion of plain Python values into them."""

from __future__ import annotations

import re
from typing import Iterable

from plugvm.acpi.aml_base import Aml, with_pkg_length
from plugvm.acpi.errors import AmlError

ZERO_OP, ONE_OP, ONES_OP = 0x00, 0x01, 0xFF
BYTE_PREFIX, WORD_PREFIX, DWORD_PREFIX, STRING_PREFIX, QWORD_PREFIX = 0x0A, 0x0B, 0x0C, 0x0D, 0x0E
BUFFER_OP, PACKAGE_OP = b"\x11", b"\x12"
ONES = (1 << 64) - 1        # Ones is all 64 bits: our DSDT is revision 2, so integers are 64-bit
_SIZES = ((BYTE_PREFIX, 1), (WORD_PREFIX, 2), (DWORD_PREFIX, 4), (QWORD_PREFIX, 8))
_EISA_ID = re.compile(r"[A-Z]{3}[0-9A-F]{4}")


class Integer(Aml):
    """An integer constant in its shortest encoding, as the ASL compiler emits it:
    Zero, One and Ones as their opcodes, else the smallest of Byte/Word/DWord/QWord."""

    def __init__(self, value: int):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= ONES:
            raise AmlError(f"AML integer {value!r} is not in 0..2**64-1")
        self.value = value

    def to_bytes(self) -> bytes:
        if self.value in (0, 1):
            return bytes([ZERO_OP if self.value == 0 else ONE_OP])
        if self.value == ONES:
            return bytes([ONES_OP])
        for prefix, size in _SIZES:
            if self.value < 1 << (8 * size):
                return bytes([prefix]) + self.value.to_bytes(size, "little")
        raise AssertionError("unreachable: the value was checked to fit 64 bits")


class Zero(Integer):
    """Zero."""

    def __init__(self):
        super().__init__(0)


class One(Integer):
    """One."""

    def __init__(self):
        super().__init__(1)


class Ones(Integer):
    """Ones: all bits set."""

    def __init__(self):
        super().__init__(ONES)


class EisaId(Integer):
    """EisaId ("PNP0501"): the compressed EISA id (ACPI 6.5, 6.1.5 _HID): three letters
    in five bits each (A=1) and four hex digits, laid out big-endian in the four bytes
    of the integer: "PNP0501" is bytes 41 D0 05 01, the integer 0x0105D041."""

    def __init__(self, eisa_id: str):
        if not _EISA_ID.fullmatch(eisa_id):
            raise AmlError(f"EISA id {eisa_id!r} is not three letters A-Z and four hex digits")
        letters = 0
        for char in eisa_id[:3]:
            letters = (letters << 5) | (ord(char) - ord("A") + 1)
        compressed = (letters << 16) | int(eisa_id[3:], 16)
        super().__init__(int.from_bytes(compressed.to_bytes(4, "big"), "little"))
        self.eisa_id = eisa_id


class String(Aml):
    """String ("text"): ASCII, NUL-terminated in AML."""

    def __init__(self, text: str):
        if not all(0x01 <= ord(c) <= 0x7F for c in text):
            raise AmlError(f"AML string {text!r} holds a character outside ASCII 0x01-0x7F")
        self.text = text

    def to_bytes(self) -> bytes:
        return bytes([STRING_PREFIX]) + self.text.encode("ascii") + b"\0"


class Buffer(Aml):
    """Buffer () {0x01, ...}: BufferOp PkgLength BufferSize ByteList."""

    def __init__(self, data: bytes):
        self.data = bytes(data)

    def to_bytes(self) -> bytes:
        return with_pkg_length(BUFFER_OP, Integer(len(self.data)).to_bytes() + self.data)


class Package(Aml):
    """Package () {elements}: ints, strs, AML data objects or names; at most 255 of
    them (more would need a VarPackage)."""

    def __init__(self, *elements: object):
        if len(elements) > 255:
            raise AmlError(f"an AML Package holds at most 255 elements, not {len(elements)}")
        self.elements = [to_aml(e) for e in elements]

    def to_bytes(self) -> bytes:
        return with_pkg_length(PACKAGE_OP, bytes([len(self.elements)]) + term_list(self.elements))


def to_aml(value: object) -> Aml:
    """A Python value as an AML object: int → Integer, str → String; AML objects pass
    through. Anything else is a mistake of the caller's."""
    if isinstance(value, Aml):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise AmlError(f"{value!r} ({type(value).__name__}) is not an AML object, int or str")
    return Integer(value) if isinstance(value, int) else String(value)


def term_list(objects: Iterable[object]) -> bytes:
    """Consecutive AML objects, as in a TermList or a PackageElementList."""
    return b"".join(to_aml(o).to_bytes() for o in objects)
