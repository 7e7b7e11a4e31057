"""The list values of ch's option strings: `[0,2-4]`, `[amx]`, `[0@[0-3],1@[4]]`.

Each parser raises ValueError with the reason; Options.convert adds the option and key.
"""

from __future__ import annotations

from plugvm.config.options import U64, dequote, split_items, to_int

# More values than any list of ch's options means (CPUs, fds, queues): a range like
# [0-18446744073709551615] is refused rather than expanded.
MAX_VALUES = 4096


def _unbracket(text: str) -> str:
    text = text.strip()
    return text[1:-1] if text.startswith("[") and text.endswith("]") else text


def int_list(text: str, high: int = U64) -> tuple[int, ...]:
    """`[0,2-4]` → (0, 2, 3, 4); brackets optional, as in ch's IntegerList."""
    values: list[int] = []
    for item in _unbracket(text).split(","):
        ends = [to_int(end.strip()) for end in item.split("-")]
        if len(ends) > 2 or None in ends:
            raise ValueError(f"bad item {item!r}")
        first, last = ends[0], ends[-1]
        if len(ends) == 2 and first >= last:
            raise ValueError(f"the range {item!r} is empty or reversed")
        if last > high:
            raise ValueError(f"{last} is above {high}")
        if len(values) + last - first + 1 > MAX_VALUES:
            raise ValueError(f"the list holds more than {MAX_VALUES} values")
        values.extend(range(first, last + 1))
    return tuple(values)


def string_list(text: str) -> tuple[str, ...]:
    """`[a,b]` or `a,b` → ('a', 'b'); `[]` → ()."""
    return tuple(dequote(item.strip()) for item in split_items(_unbracket(text)))


def tuple_list(text: str, key_high: int, value_high: int) -> tuple[tuple[int, tuple[int, ...]], ...]:
    """`[0@[0-3],1@4]` → ((0, (0, 1, 2, 3)), (1, (4,))); the outer brackets are required."""
    text = text.strip()
    if not (text.startswith("[") and text.endswith("]")):
        raise ValueError("expected [N@[list],...]")
    pairs = []
    for item in split_items(text[1:-1]):
        key, at, value = item.strip().partition("@")
        number = to_int(key)
        if not at or number is None:
            raise ValueError(f"bad item {item.strip()!r} (expected N@[list])")
        if number > key_high:
            raise ValueError(f"{number} is above {key_high}")
        pairs.append((number, int_list(value, value_high)))
    return tuple(pairs)
