"""ConfigError, and Where: how an error names the option or JSON field a bad value came from."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from plugvm.config.sizes import show_size
from plugvm.errors import PlugvmError


class ConfigError(PlugvmError, ValueError):
    """A command-line option or a JSON VM config is malformed or contradicts itself.

    The message starts with the option (`--cpus`) or JSON object (`cpus`) and names
    the key and the bad value, so the CLI can print it as its one line of error."""


@dataclass(frozen=True, eq=False)
class Where:
    """Where a group of settings came from, so that errors use the user's own spelling:
    the option `--cpus` with its key `boot` and values as typed, or the JSON object
    `cpus` with its field `boot_vcpus` and values in JSON. `keys` maps a dataclass
    field to its CLI key where the two differ."""

    option: str
    keys: Mapping[str, str] = field(default_factory=dict)
    json: bool = False

    def key(self, name: str) -> str:
        return self.keys.get(name, name)

    def show(self, value: object) -> str:
        if isinstance(value, str):
            return repr(value)
        return json.dumps(value) if self.json else str(value)

    def size(self, value: int) -> str:
        """A byte count as the user would have written it: `128M` on the CLI, bytes in JSON."""
        return str(value) if self.json else show_size(value)

    def error(self, message: str) -> ConfigError:
        return ConfigError(f"{self.option}: {message}")

    def bad(self, name: str, value: object, problem: str) -> ConfigError:
        """`--cpus: boot='x' is not an integer`."""
        return self.error(f"{self.key(name)}={self.show(value)} {problem}")

    def within(self, name: str, value: int, low: int, high: int) -> int:
        if not low <= value <= high:
            raise self.bad(name, value, f"is out of range ({low} to {high})")
        return value

    def inner(self, name: str) -> Where:
        """The JSON object nested under field `name` (`cpus.topology`)."""
        return Where(f"{self.option}.{self.key(name)}", json=self.json)


class DuplicateIdError(ConfigError):
    """Two devices of one VM config have the same id (cloud-hypervisor's
    IdentifierNotUnique, which its API answers with 409)."""
