"""--kernel, --initramfs and --cmdline, or the JSON `payload` object: what the VM boots.

The files are checked when the config is made, so a bad path fails before anything starts:
the kernel must be a bzImage (the setup header's "HdrS" at 0x202, Documentation/arch/x86/boot.rst)
or an ELF vmlinux; the initramfs must be a readable file.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from plugvm.config.errors import ConfigError
from plugvm.config.json_fields import JsonObject

BZIMAGE_MAGIC_OFFSET, BZIMAGE_MAGIC = 0x202, b"HdrS"
ELF_MAGIC = b"\x7fELF"

# How an error about each field starts: its own option on the command line
# (`--kernel: '/x' does not exist`), a field of `payload` in JSON (`payload: kernel='/x' ...`).
CLI_NAMES = {"kernel": "--kernel: ", "initramfs": "--initramfs: ", "cmdline": "--cmdline: "}
JSON_NAMES = {name: f"payload: {name}=" for name in ("kernel", "initramfs", "cmdline")}


@dataclass(frozen=True)
class PayloadConfig:
    """The kernel to boot, with its initramfs and command line."""

    kernel: Path
    initramfs: Path | None = None
    cmdline: str | None = None

    def validate(self, names: Mapping[str, str]) -> None:
        """Checks the files; `names` is CLI_NAMES or JSON_NAMES."""
        head = _read_head(names["kernel"], self.kernel)
        if head[:4] != ELF_MAGIC and head[BZIMAGE_MAGIC_OFFSET:BZIMAGE_MAGIC_OFFSET + 4] != BZIMAGE_MAGIC:
            raise ConfigError(f"{names['kernel']}{str(self.kernel)!r} is neither a bzImage (no \"HdrS\" at "
                              f"0x202) nor an ELF vmlinux")
        if self.initramfs is not None:
            _read_head(names["initramfs"], self.initramfs)
        if self.cmdline is not None and "\0" in self.cmdline:
            raise ConfigError(f"{names['cmdline']}{self.cmdline!r} contains a NUL byte")
        if self.cmdline is not None:
            try:
                self.cmdline.encode("utf-8")
            except UnicodeEncodeError:    # bytes that are not UTF-8 on our command line
                raise ConfigError(f"{names['cmdline']}{self.cmdline[:80]!r} is not UTF-8 text") from None

    @classmethod
    def from_json(cls, j: JsonObject) -> PayloadConfig:
        config = cls(kernel=j.path("kernel"), initramfs=j.path("initramfs", None), cmdline=j.string("cmdline", None))
        j.lacking("firmware", "plugvm boots a kernel directly, without firmware")
        j.lacking("igvm", "plugvm has no IGVM loader")
        j.lacking("host_data", "plugvm has no confidential guests")
        j.close()
        config.validate(JSON_NAMES)
        return config

    def to_json(self) -> dict:
        body = {"kernel": str(self.kernel),
                "cmdline": self.cmdline,
                "initramfs": None if self.initramfs is None else str(self.initramfs)}
        return {key: value for key, value in body.items() if value is not None}


def _read_head(name: str, path: Path) -> bytes:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise ConfigError(f"{name}{str(path)[:200]!r} does not exist") from None
    except (OSError, ValueError) as e:        # too long, a NUL, not a directory on the way
        raise ConfigError(f"{name}{str(path)[:200]!r} cannot be used: {getattr(e, 'strerror', None) or e}") from None
    if not stat.S_ISREG(mode):
        raise ConfigError(f"{name}{str(path)!r} is not a regular file")
    try:
        with path.open("rb") as f:
            return f.read(BZIMAGE_MAGIC_OFFSET + len(BZIMAGE_MAGIC))
    except OSError as e:
        raise ConfigError(f"{name}{str(path)!r} cannot be read: {e.strerror}") from e
