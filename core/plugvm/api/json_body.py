"""The one JSON decoder for request bodies: what cloud-hypervisor's serde refuses,
refused here with a 400, before any handler sees the body.

- The body is UTF-8, without a byte-order mark (RFC 8259 §8.1); UTF-16 is refused.
- A key given twice in one object is refused, as serde refuses a duplicate field.
- Nesting is limited to MAX_DEPTH levels (the parser's own recursion limit stops
  far deeper bodies first).
- A string with a lone surrogate ("\\ud800") is refused: it is not text, and it
  would fail later, where a path or a serial number is encoded for the host.
"""

from __future__ import annotations

import json

MAX_DEPTH = 64


class BodyError(ValueError):
    """The body is not JSON that the API takes; str() says why, for the error array."""


def _no_duplicates(pairs: list[tuple[str, object]]) -> dict:
    obj = {}
    for key, value in pairs:
        if key in obj:
            raise BodyError(f"duplicate field {key!r}")
        obj[key] = value
    return obj


def _check(value: object) -> None:
    """Nesting within MAX_DEPTH and no lone surrogates, walked without recursion."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise BodyError(f"the string {item[:40]!r} holds a lone surrogate, which is not text") from None
        elif isinstance(item, (dict, list)):
            if depth >= MAX_DEPTH:
                raise BodyError(f"the body nests arrays and objects more than {MAX_DEPTH} deep")
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)


def decode(raw: bytes) -> object:
    """The JSON value of raw, or BodyError."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raise BodyError("the body starts with a byte-order mark; JSON bodies are UTF-8 without one")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BodyError(f"the body is not UTF-8 (byte {e.start})") from None
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates)
    except BodyError:
        raise
    except RecursionError:      # deeper than the interpreter's limit (about 1000)
        raise BodyError(f"the body nests arrays and objects more than {MAX_DEPTH} deep") from None
    except ValueError as e:
        raise BodyError(f"{e}") from None
    _check(value)
    return value
