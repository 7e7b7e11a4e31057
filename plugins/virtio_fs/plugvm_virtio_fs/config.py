"""FsConfig: cloud-hypervisor's --fs option and `fs` JSON (notes §1.4, §2.1): tag and
socket required, num_queues 1 and queue_size 1024 by default, and the PCI fields."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from plugvm.config.errors import Where
from plugvm.config.json_fields import JsonObject
from plugvm.config.options import U16, Options
from plugvm.device_config import PCI_KEYS, PciFields, pci_from_json, pci_from_options

CLI = Where("--fs")
JSON = Where("fs", json=True)
TAG_MAX = 36                # the config space's tag[36]: UTF-8, NUL-padded, not NUL-terminated when full
DEFAULT_QUEUES, DEFAULT_QUEUE_SIZE = 1, 1024
MAX_REQUEST_QUEUES = 64     # a bound of ours: each queue is a vector and two eventfds


@dataclass(frozen=True, kw_only=True)
class FsConfig(PciFields):
    tag: str
    socket: Path
    num_queues: int = DEFAULT_QUEUES
    queue_size: int = DEFAULT_QUEUE_SIZE

    def to_json(self) -> dict:
        return {"tag": self.tag, "socket": str(self.socket), "num_queues": self.num_queues,
                "queue_size": self.queue_size, **self.pci_json()}


def parse(text: str) -> FsConfig:
    o = Options(text, CLI, keys=("tag", "socket", "num_queues", "queue_size", *PCI_KEYS))
    if not o.text("tag"):
        raise CLI.error("tag is required (tag=NAME, the name the guest mounts)")
    if not o.text("socket"):
        raise CLI.error("socket is required (socket=PATH, virtiofsd's vhost-user socket)")
    config = FsConfig(tag=o.text("tag"), socket=Path(o.text("socket")),
                      num_queues=o.integer("num_queues", DEFAULT_QUEUES, U16),
                      queue_size=o.integer("queue_size", DEFAULT_QUEUE_SIZE, U16), **pci_from_options(o))
    return checked(config, CLI)


def from_json(body: object) -> FsConfig:
    j = JsonObject(body, JSON)
    config = FsConfig(tag=j.string("tag"), socket=j.path("socket"),
                      num_queues=j.integer("num_queues", DEFAULT_QUEUES, U16),
                      queue_size=j.integer("queue_size", DEFAULT_QUEUE_SIZE, U16), **pci_from_json(j))
    # Fields of older cloud-hypervisors (DAX), accepted at their defaults only.
    j.unsupported("dax", False, "plugvm-virtio-fs (no DAX, as cloud-hypervisor)")
    j.unsupported("cache_size", None, "plugvm-virtio-fs (no DAX, as cloud-hypervisor)")
    j.close()
    return checked(config, JSON)


def checked(config: FsConfig, where: Where) -> FsConfig:
    tag = config.tag.encode()
    if not tag or len(tag) > TAG_MAX:
        raise where.bad("tag", config.tag, f"must be 1 to {TAG_MAX} bytes (UTF-8), the config space's tag")
    if b"\0" in tag:
        raise where.bad("tag", config.tag, "may not contain a NUL byte")
    if not 1 <= config.num_queues <= MAX_REQUEST_QUEUES:
        raise where.bad("num_queues", config.num_queues, f"must be 1 to {MAX_REQUEST_QUEUES} request queues")
    size = config.queue_size
    if not 2 <= size <= 32768 or size & (size - 1):
        raise where.bad("queue_size", size, "must be a power of two from 2 to 32768")
    return config
