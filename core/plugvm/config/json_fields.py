"""Reading the JSON body of a VM config (notes §1.4): typed fields, ch's defaults, and
unknown fields ignored with a warning, as cloud-hypervisor's serde ignores them (its
clients, Kata's among them, send fields of newer or older specs); and ChEnum, for enums
spelt one way on the CLI and another in JSON."""

from __future__ import annotations

import threading
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from plugvm.config.errors import Where
from plugvm.logs import get_logger

E = TypeVar("E", bound="ChEnum")
log = get_logger(__name__)

# The unknown fields warned about, each once per process. Bounded: a client sending a new
# name in every request gets warnings for the first ones only, not a growing set.
_WARNED_MAX = 1024
_warned: set[str] = set()
_warned_lock = threading.Lock()

REQUIRED: Any = object()


class ChEnum(StrEnum):
    """A cloud-hypervisor enum. The value is the CLI spelling (`virtio-mem`); the JSON
    spelling is ch's serde variant name, the same words capitalised (`VirtioMem`)."""

    @property
    def json_name(self) -> str:
        return "".join(word.capitalize() for word in self.value.split("-"))

    @classmethod
    def cli_choices(cls) -> dict[str, ChEnum]:
        return {member.value: member for member in cls}


def warn_unknown(name: str, known: list[str]) -> bool:
    """Log that the JSON field `name` (`serial.iommu`) is ignored, the first time it is
    seen; True when this call logged it."""
    with _warned_lock:
        if name in _warned or len(_warned) >= _WARNED_MAX:
            return False
        _warned.add(name)
    log.warning("unknown JSON field ignored", field=name, known=", ".join(known))
    return True


class JsonObject:
    """One JSON object, read field by field; close() ignores the fields nobody asked for,
    warning once about each."""

    def __init__(self, value: object, where: Where):
        if not isinstance(value, dict):
            shown = where.show(value) if isinstance(value, (str, int, float, bool, type(None))) else type(value).__name__
            raise where.error(f"expected a JSON object, got {shown}")
        self.value: dict[str, Any] = value
        self.where = where
        self._read: set[str] = set()

    def _take(self, key: str, default: Any) -> tuple[bool, Any]:
        """(True, value) for a field that is present and not null, else (False, default).
        null is accepted only where the default is None: ch's Option<T> fields."""
        self._read.add(key)
        if key not in self.value:
            if default is REQUIRED:
                raise self.where.error(f"missing field {key!r}")
            return False, default
        value = self.value[key]
        if value is None:
            if default is not None:
                raise self.where.bad(key, value, "may not be null")
            return False, None
        return True, value

    def integer(self, key: str, default: Any = REQUIRED, high: int = 2**64 - 1) -> Any:
        given, value = self._take(key, default)
        # bool is an int in Python but not in JSON.
        if given and (not isinstance(value, int) or isinstance(value, bool)):
            raise self.where.bad(key, value, "is not an integer")
        return self.where.within(key, value, 0, high) if given else value

    def boolean(self, key: str, default: Any = REQUIRED) -> bool:
        given, value = self._take(key, default)
        if given and not isinstance(value, bool):
            raise self.where.bad(key, value, "is not true or false")
        return value

    def string(self, key: str, default: Any = REQUIRED) -> Any:
        given, value = self._take(key, default)
        if given and not isinstance(value, str):
            raise self.where.bad(key, value, "is not a string")
        return value

    def path(self, key: str, default: Any = REQUIRED) -> Any:
        given, value = self._take(key, default)
        if given and (not isinstance(value, str) or not value):
            raise self.where.bad(key, value, "is not a path")
        return Path(value) if given else value

    def enum(self, key: str, kind: type[E], default: Any = REQUIRED) -> E:
        given, value = self._take(key, default)
        if not given:
            return value
        for member in kind:
            if value == member.json_name:
                return member
        raise self.where.bad(key, value, f"is not one of {', '.join(m.json_name for m in kind)}")

    def object(self, key: str, default: Any = REQUIRED, where: Where | None = None) -> Any:
        """A nested object, named in errors as `where` (default: `parent.key`)."""
        given, value = self._take(key, default)
        return JsonObject(value, where or self.where.inner(key)) if given else value

    def array(self, key: str, default: Any = REQUIRED) -> Any:
        given, value = self._take(key, default)
        if given and not isinstance(value, list):
            raise self.where.bad(key, value, "is not a list")
        return value

    def unsupported(self, key: str, default: Any, by: str = "plugvm") -> None:
        """A ch field that is not implemented: accepted only when absent, null or at ch's
        default, since clients such as ch-remote send every field of the struct."""
        given, value = self._take(key, None)
        if given and value != default:
            raise self.where.bad(key, value, f"is not supported by {by}")

    def lacking(self, key: str, why: str) -> None:
        """A field of cloud-hypervisor's spec for something plugvm lacks: accepted when it
        asks for nothing (absent, null, false, [] or {}: what clients send by default,
        Kata's `iommu: false` and `watchdog: false`), else refused naming it and `why`."""
        given, value = self._take(key, None)
        if given and value not in (False, [], {}):
            raise self.where.bad(key, value, f"is not supported: {why}")

    def close(self) -> None:
        """The object is read: warn (once each) about the fields nobody asked for. A field
        of cloud-hypervisor's spec that plugvm lacks is read, by unsupported(), so that
        a value asking for it is refused rather than ignored."""
        for key in sorted(set(self.value) - self._read):
            warn_unknown(f"{self.where.option}.{key}", sorted(self._read))
