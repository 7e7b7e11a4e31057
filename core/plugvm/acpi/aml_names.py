"""Names in AML (ACPI 6.5, 20.2.2 "Name Objects Encoding")."""

from __future__ import annotations

import re

from plugvm.acpi.aml_base import Aml
from plugvm.acpi.errors import AmlError

NULL_NAME, DUAL_NAME_PREFIX, MULTI_NAME_PREFIX = b"\x00", b"\x2e", b"\x2f"
_SEGMENT = re.compile(r"[A-Z_][A-Z0-9_]{0,3}")     # LeadNameChar NameChar{3}, before padding
_PATH = re.compile(r"(?P<prefix>\\|\^*)(?P<path>.*)", re.DOTALL)


def name_seg(segment: str) -> bytes:
    """A NameSeg: four characters, short names padded with '_' as the ASL compiler does
    ("PCI" → "PCI_")."""
    if not _SEGMENT.fullmatch(segment):
        raise AmlError(f"AML name segment {segment!r} is not 1-4 of A-Z, 0-9, _ (not starting with a digit)")
    return segment.ljust(4, "_").encode("ascii")


class NameString(Aml):
    """A name or a path to one: "COM1", "\\\\_SB_.COM1" (from the root), "^PCI0.S08_"
    (from the parent scope), or "\\\\" alone (the root itself). Used both to name new
    objects and, as a term, to refer to existing ones."""

    def __init__(self, path: str):
        match = _PATH.fullmatch(path)
        prefix, rest = match["prefix"], match["path"]
        self.path = path
        self.prefix = prefix.encode("ascii")
        self.segments = [name_seg(s) for s in rest.split(".")] if rest else []
        if not self.segments and prefix != "\\":
            raise AmlError(f"AML name {path!r} names nothing")
        if len(self.segments) > 255:
            raise AmlError(f"AML name {path!r} has more than 255 segments")

    def to_bytes(self) -> bytes:
        count = len(self.segments)
        if count == 0:
            names = NULL_NAME
        elif count == 1:
            names = self.segments[0]
        elif count == 2:
            names = DUAL_NAME_PREFIX + b"".join(self.segments)
        else:
            names = MULTI_NAME_PREFIX + bytes([count]) + b"".join(self.segments)
        return self.prefix + names

    def __repr__(self) -> str:
        return f"NameString({self.path!r})"


def name_string(name: str | NameString) -> NameString:
    """Accept either a str or a ready NameString wherever a name is expected."""
    return name if isinstance(name, NameString) else NameString(name)
