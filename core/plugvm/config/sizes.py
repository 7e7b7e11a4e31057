"""Byte sizes in ch's syntax (its ByteSized): digits, then an optional binary K, M or G.

Uppercase only, no T and no B suffix, as ch. Stored everywhere as int bytes.
"""

from __future__ import annotations

import re

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

_SIZE = re.compile(r"(\+?[0-9]+)([KMG]?)")
_UNITS = {"": 1, "K": KiB, "M": MiB, "G": GiB}


def to_size(text: str) -> int | None:
    """`512M` → 536870912; None if text is not a size."""
    match = _SIZE.fullmatch(text.strip())
    return int(match[1]) * _UNITS[match[2]] if match else None


def show_size(size: int) -> str:
    """The shortest exact spelling: 536870912 → `512M`, 1000 → `1000`."""
    for suffix in ("G", "M", "K"):
        if size and size % _UNITS[suffix] == 0:
            return f"{size // _UNITS[suffix]}{suffix}"
    return str(size)
