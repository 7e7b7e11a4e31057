"""cloud-hypervisor's option strings (`key=value,key=value`) and their scalar values.

The syntax follows ch's option_parser crate: items are split at commas, except
inside `[...]` (so `affinity=[0@[0,1]]` is one item) or `"..."` (so
`file="a,b"` is); a quote inside a quoted string is written twice (`"a""b"` is a"b);
values are trimmed; a key given an empty value (`size=`) counts as not given.
Stricter than ch, which lets the last one win or ignores it: a key given twice,
and a value given to a flag such as `tty`, are refused.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from plugvm.config.errors import Where
from plugvm.config.sizes import to_size

T = TypeVar("T")

U8, U16, U32, U64 = 2**8 - 1, 2**16 - 1, 2**32 - 1, 2**64 - 1

# Rust's unsigned FromStr, which ch uses: ASCII digits with an optional '+'.
_INTEGER = re.compile(r"\+?[0-9]+")
_TOGGLE = {"on": True, "true": True, "off": False, "false": False}


def split_items(text: str) -> list[str]:
    """Split at the commas that are outside brackets and quotes; [] for blank text.
    Unbalanced brackets or quotes raise ValueError."""
    text = text.strip()
    if not text:
        return []
    items: list[str] = []
    current: list[str] = []
    depth, quoted = 0, False
    for c in text:
        if c == '"':
            quoted = not quoted
        elif quoted:
            pass
        elif c == "[":
            depth += 1
        elif c == "]":
            if depth == 0:
                raise ValueError(f"unbalanced ']' in {text!r}")
            depth -= 1
        elif c == "," and depth == 0:
            items.append("".join(current))
            current = []
            continue
        current.append(c)
    if quoted:
        raise ValueError(f"unclosed '\"' in {text!r}")
    if depth:
        raise ValueError(f"unclosed '[' in {text!r}")
    items.append("".join(current))
    return items


def dequote(value: str) -> str:
    """Drop the quotes; a quote that reopens right after a closing one is a literal '"'."""
    out: list[str] = []
    quoted, previous = False, ""
    for c in value:
        if c == '"':
            if previous == '"' and not quoted:
                out.append('"')
            quoted = not quoted
        else:
            out.append(c)
        previous = c
    return "".join(out)


def quote(value: str) -> str:
    """The quoted spelling of any string, which dequote() turns back into it."""
    return '"' + value.replace('"', '""') + '"'


def to_int(text: str) -> int | None:
    return int(text) if _INTEGER.fullmatch(text) else None


def to_toggle(text: str) -> bool | None:
    return _TOGGLE.get(text.lower())


class Options:
    """One option string, parsed: keys are checked at once, values converted on request
    (each converter returns its default when the key is absent or empty)."""

    def __init__(self, text: str, where: Where, keys: Iterable[str], flags: Iterable[str] = ()):
        self.where = where
        keys, flags = tuple(keys), tuple(flags)
        self.raw: dict[str, str] = {}
        try:
            items = split_items(text)
        except ValueError as e:
            raise where.error(str(e)) from e
        for item in items:
            key, equals, value = item.partition("=")
            if key in flags and equals:
                raise where.error(f"{key} takes no value (got {item!r})")
            if key in keys and not equals:
                raise where.error(f"{key} needs a value ({key}=...)")
            if key not in keys and key not in flags:
                raise where.error(f"unknown key {key!r} (expected one of: {', '.join(flags + keys)})")
            if key in self.raw:
                raise where.error(f"{key} is given twice")
            self.raw[key] = value.strip()

    def given(self, key: str) -> bool:
        return key in self.raw

    def text(self, key: str) -> str | None:
        value = self.raw.get(key)
        return dequote(value) if value else None

    def convert(self, key: str, default: T, parse: Callable[[str], T | None], expected: str) -> T:
        """parse() returns None, or raises ValueError with a reason, for a bad value."""
        value = self.raw.get(key)
        if not value:
            return default
        try:
            result = parse(value)
        except ValueError as e:
            raise self.where.error(f"{key}={value!r} is not {expected}: {e}") from e
        if result is None:
            raise self.where.error(f"{key}={value!r} is not {expected}")
        return result

    def integer(self, key: str, default: int, high: int) -> int:
        value = self.convert(key, default, lambda v: to_int(dequote(v)), "an integer")
        if value > high:
            raise self.where.error(f"{key}={self.raw[key]!r} is out of range (0 to {high})")
        return value

    def size(self, key: str, default: int | None) -> int | None:
        value = self.convert(key, default, lambda v: to_size(dequote(v)), "a size (bytes, or a number and K, M or G)")
        if value is not None and value > U64:
            raise self.where.error(f"{key}={self.raw[key]!r} is too large")
        return value

    def toggle(self, key: str, default: bool) -> bool:
        return self.convert(key, default, lambda v: to_toggle(dequote(v)), "on/off (on, off, true or false)")

    def choice(self, key: str, default: T, choices: Mapping[str, T]) -> T:
        # ch matches these names case-insensitively (e.g. its HotplugMethod::from_str).
        return self.convert(key, default, lambda v: choices.get(dequote(v).lower()),
                            f"one of {', '.join(choices)}")
