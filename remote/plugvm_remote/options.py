"""cloud-hypervisor's ``key=value,...`` option syntax (option_parser/src/lib.rs).

Commas inside ``[...]`` or ``"..."`` do not split; unknown keys are an error;
toggles take on/off/true/false/"" (empty = off); integer lists take ``[0,2-4]``.
Sizes are ByteSized: trimmed, optional trailing uppercase K/M/G (binary), else bytes.
"""

from __future__ import annotations

import re
from typing import Iterable

from plugvm_remote.errors import ConfigSyntaxError


class OptionParserError(ConfigSyntaxError):
    """option_parser's OptionParserError; the text matches its Display."""


def split_commas(text: str) -> list[str]:
    """Split on commas outside brackets and quotes; unbalanced input is invalid syntax."""
    items: list[str] = []
    current: list[str] = []
    brackets = 0
    in_quotes = False
    for c in text.strip():
        if c == '"':
            in_quotes = not in_quotes
        elif in_quotes:
            pass
        elif c == "[":
            brackets += 1
        elif c == "]":
            if brackets < 1:
                raise OptionParserError(f"Invalid syntax: {text}")
            brackets -= 1
        elif c == "," and brackets == 0:
            items.append("".join(current))
            current = []
            continue
        current.append(c)
    items.append("".join(current))
    if in_quotes or brackets:
        raise OptionParserError(f"Invalid syntax: {text}")
    return items


def dequote(value: str) -> str:
    """Drop quote characters; a doubled quote outside quotes stands for one quote."""
    out: list[str] = []
    prev = ""
    in_quotes = False
    for c in value:
        if c == '"':
            if prev == '"' and not in_quotes:
                out.append('"')
            in_quotes = not in_quotes
        else:
            out.append(c)
        prev = c
    return "".join(out)


class OptionParser:
    """Parses one option string against a fixed set of keys (all take a value)."""

    def __init__(self, keys: Iterable[str]) -> None:
        self.values: dict[str, str | None] = dict.fromkeys(keys)

    def parse(self, text: str, ignore_unknown: bool = False) -> "OptionParser":
        if not text.strip():
            return self
        for option in split_commas(text):
            key, sep, value = option.partition("=")
            if key not in self.values:
                if ignore_unknown:
                    continue
                raise OptionParserError(f"Unknown option: {key}")
            if not sep:
                raise OptionParserError(f"Invalid syntax: {option}")
            self.values[key] = value.strip()
        return self

    def raw(self, key: str) -> str | None:
        """The value as written, or None when absent or empty (``key=``)."""
        value = self.values[key]
        return value or None

    def get(self, key: str) -> str | None:
        value = self.raw(key)
        return dequote(value) if value is not None else None

    def convert(self, key: str, converter):
        """Apply ``converter`` to the raw value; a failure names the key and value."""
        value = self.raw(key)
        if value is None:
            return None
        try:
            return converter(value)
        except ValueError:
            raise OptionParserError(f"Unable to convert {value} for {key}") from None

    def toggle(self, key: str, default: bool) -> bool:
        value = self.convert(key, parse_toggle)
        return default if value is None else value


def parse_toggle(value: str) -> bool:
    lowered = value.lower()
    if lowered in ("on", "true"):
        return True
    if lowered in ("off", "false", ""):
        return False
    raise ValueError(f"Invalid value: {value}")


def unsigned(bits: int):
    """A Rust ``u<bits>`` FromStr: optional '+', decimal digits only, in range."""
    limit = 1 << bits

    def parse(value: str) -> int:
        if not value:
            raise ValueError("cannot parse integer from empty string")
        digits = value[1:] if value.startswith("+") else value
        if not digits or not digits.isascii() or not digits.isdigit():
            raise ValueError("invalid digit found in string")
        number = int(digits)
        if number >= limit:
            raise ValueError("number too large to fit in target type")
        return number

    return parse


def parse_byte_sized(value: str) -> int:
    """ByteSized::from_str: the K/M/G suffix shifts by 10/20/30; the result is a u64."""
    text = value.strip()
    shift = {"K": 10, "M": 20, "G": 30}.get(text[-1:], 0)
    number_text = text.rstrip("KMG")
    try:
        number = unsigned(64)(number_text)
    except ValueError:
        raise ValueError(f"Invalid value: {number_text}") from None
    return (number << shift) & ((1 << 64) - 1)


# More than any list of ch's options means (fds, CPUs): [0-100000000] is refused, not expanded.
MAX_LIST_VALUES = 4096


def parse_integer_list(value: str) -> list[int]:
    """IntegerList: ``[0,2-4]`` → [0, 2, 3, 4]; brackets optional; ranges ascend strictly."""
    result: list[int] = []
    u64 = unsigned(64)
    for item in value.strip().strip("[]").split(","):
        bounds = item.split("-")
        if len(bounds) > 2:
            raise ValueError(f"Invalid value: {item}")
        start = u64(bounds[0])
        end = u64(bounds[1]) if len(bounds) == 2 else start
        if len(bounds) == 2 and start >= end:
            raise ValueError(f"Invalid value: {item}")
        if len(result) + end - start + 1 > MAX_LIST_VALUES:
            raise ValueError(f"Invalid value: {item} (more than {MAX_LIST_VALUES} values)")
        result.extend(range(start, end + 1))
    return result


_TUPLE = re.compile(r"^([^@]+)@(.*)$")


def parse_queue_affinity(value: str) -> list[dict]:
    """TupleList<u16, Vec<usize>>: ``[0@[0,2],1@[1-3]]`` → VirtQueueAffinity objects."""
    text = value.strip()
    if not (text.startswith("[") and text.endswith("]")):
        raise ValueError(f"unbalanced brackets: {value}")
    affinities = []
    for raw in split_commas(text[1:-1]):
        match = _TUPLE.match(raw.strip())
        if match is None:
            raise ValueError(f"Invalid value: {raw}")
        affinities.append({
            "queue_index": unsigned(16)(match.group(1)),
            "host_cpus": parse_integer_list(match.group(2)),
        })
    return affinities
