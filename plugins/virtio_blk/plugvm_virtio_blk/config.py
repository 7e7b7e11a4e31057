"""DiskConfig: cloud-hypervisor's --disk option and `disks` JSON (notes §1.4)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from plugvm.config.errors import Where
from plugvm.config.json_fields import JsonObject
from plugvm.config.options import U16, Options
from plugvm.device_config import PCI_KEYS, PciFields, pci_from_json, pci_from_options

CLI = Where("--disk")
JSON = Where("disks", json=True)
IMAGE_TYPES = {"raw": "Raw", "unknown": "Unknown"}
SERIAL_MAX = 20          # VIRTIO_BLK_ID_BYTES
# ch fields plugvm-virtio-blk does not implement, with ch's defaults (accepted at those).
UNSUPPORTED_JSON = {"vhost_user": False, "vhost_socket": None, "rate_limit_group": None, "rate_limiter_config": None,
                    "queue_affinity": None, "backing_files": False, "sparse": True, "disable_io_uring": False,
                    "disable_aio": False}
UNSUPPORTED = ("vhost_user", "socket", "rate_limit_group", "queue_affinity", "backing_files", "sparse",
               "bw_size", "bw_one_time_burst", "bw_refill_time", "ops_size", "ops_one_time_burst", "ops_refill_time")
TOGGLE_DEFAULTS = {"vhost_user": False, "backing_files": False, "sparse": True}


@dataclass(frozen=True, kw_only=True)
class DiskConfig(PciFields):
    path: Path
    readonly: bool = False
    direct: bool = False
    num_queues: int = 1
    queue_size: int = 128
    serial: str | None = None
    image_type: str = "Unknown"

    def to_json(self) -> dict:
        body = {"path": str(self.path), "readonly": self.readonly, "direct": self.direct,
                "num_queues": self.num_queues, "queue_size": self.queue_size, "image_type": self.image_type,
                **self.pci_json()}
        if self.serial is not None:
            body["serial"] = self.serial
        return body


def parse(text: str) -> DiskConfig:
    o = Options(text, CLI, keys=("path", "readonly", "direct", "num_queues", "queue_size", "serial",
                                 "image_type", *PCI_KEYS, *UNSUPPORTED))
    for key in UNSUPPORTED:
        default = TOGGLE_DEFAULTS.get(key)
        if o.given(key) and (default is None or o.toggle(key, default) != default):
            raise CLI.error(f"{key} is not supported by plugvm-virtio-blk")
    if not o.text("path"):
        raise CLI.error("path is required (path=IMAGE)")
    config = DiskConfig(path=Path(o.text("path")), readonly=o.toggle("readonly", False),
                        direct=o.toggle("direct", False), num_queues=o.integer("num_queues", 1, U16),
                        queue_size=o.integer("queue_size", 128, U16), serial=o.text("serial"),
                        image_type=o.choice("image_type", "Unknown", IMAGE_TYPES), **pci_from_options(o))
    return _checked(config, CLI)


def from_json(body: object) -> DiskConfig:
    j = JsonObject(body, JSON)
    for key, default in UNSUPPORTED_JSON.items():
        j.unsupported(key, default, "plugvm-virtio-blk")
    j.unsupported("lock_granularity", "ByteRange", "plugvm-virtio-blk")
    config = DiskConfig(path=j.path("path"), readonly=j.boolean("readonly", False), direct=j.boolean("direct", False),
                        num_queues=j.integer("num_queues", 1, U16), queue_size=j.integer("queue_size", 128, U16),
                        serial=j.string("serial", None), image_type=j.string("image_type", "Unknown"),
                        **pci_from_json(j))
    j.close()
    if config.image_type not in IMAGE_TYPES.values():
        raise JSON.bad("image_type", config.image_type, f"is not supported (plugvm reads {', '.join(IMAGE_TYPES.values())})")
    return _checked(config, JSON)


def _checked(config: DiskConfig, where: Where) -> DiskConfig:
    if config.num_queues < 1:
        raise where.bad("num_queues", config.num_queues, "must be at least 1")
    size = config.queue_size
    if not 2 <= size <= 32768 or size & (size - 1):
        raise where.bad("queue_size", size, "must be a power of two from 2 to 32768")
    if config.serial is not None and len(config.serial.encode()) > SERIAL_MAX:
        raise where.bad("serial", config.serial, f"is longer than {SERIAL_MAX} bytes")
    return config
