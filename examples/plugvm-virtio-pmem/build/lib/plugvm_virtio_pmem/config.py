"""PmemConfig: cloud-hypervisor's --pmem option and `pmem` JSON (vmm/src/config.rs
PmemConfig::parse, vm_config.rs PmemConfig): file, size, discard_writes and the PCI fields."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from plugvm.config.errors import Where
from plugvm.config.json_fields import JsonObject
from plugvm.config.options import Options
from plugvm.device_config import PCI_KEYS, PciFields, pci_from_json, pci_from_options

CLI = Where("--pmem")
JSON = Where("pmem", json=True)
ALIGNMENT = 2 << 20          # ch's PmemSizeNotAligned: the range is mapped with 2 MiB pages


@dataclass(frozen=True, kw_only=True)
class PmemConfig(PciFields):
    file: Path
    size: int | None = None          # None: the file's size (a directory needs one: a temporary file)
    discard_writes: bool = False     # a private copy-on-write mapping of the file, opened read-only

    def to_json(self) -> dict:
        # ch serialises every field; size is an Option, null when not given.
        return {"file": str(self.file), "size": self.size, "discard_writes": self.discard_writes, **self.pci_json()}


def parse(text: str) -> PmemConfig:
    o = Options(text, CLI, keys=("file", "size", "discard_writes", *PCI_KEYS))
    if not o.text("file"):
        raise CLI.error("file is required (file=PATH)")
    config = PmemConfig(file=Path(o.text("file")), size=o.size("size", None),
                        discard_writes=o.toggle("discard_writes", False), **pci_from_options(o))
    return checked(config, CLI)


def from_json(body: object) -> PmemConfig:
    j = JsonObject(body, JSON)
    config = PmemConfig(file=j.path("file"), size=j.integer("size", None),
                        discard_writes=j.boolean("discard_writes", False), **pci_from_json(j))
    j.close()
    return checked(config, JSON)


def checked(config: PmemConfig, where: Where) -> PmemConfig:
    """The checks that need no file; the file's own size is checked when the device is built."""
    if config.size is not None and (config.size <= 0 or config.size % ALIGNMENT):
        raise where.bad("size", where.size(config.size) if not where.json else config.size,
                        f"is not a positive multiple of {ALIGNMENT >> 20} MiB")
    return config
