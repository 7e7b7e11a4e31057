"""virtio-rng (virtio 1.2 §5.4): the guest's /dev/hwrng, fed from a host file
(`--rng src=/dev/urandom`). Always present, as in cloud-hypervisor, with id __rng."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from plugvm.config.errors import Where
from plugvm.config.json_fields import JsonObject
from plugvm.config.options import Options
from plugvm.errors import PlugvmError
from plugvm.hookspecs import hookimpl
from plugvm.host_files import HostFileError, open_path
from plugvm.logs import get_logger
from plugvm.plugins import DeviceType
from plugvm.virtio.device import VirtioDevice

log = get_logger(__name__)
DEFAULT_SOURCE = Path("/dev/urandom")
QUEUE_SIZE = 256
CLI = Where("--rng")
JSON = Where("rng", json=True)


@dataclass(frozen=True)
class RngConfig:
    src: Path = DEFAULT_SOURCE
    iommu: bool = False
    id: str = "__rng"

    def to_json(self) -> dict:
        return {"src": str(self.src), "iommu": self.iommu}


def parse(text: str) -> RngConfig:
    o = Options(text, CLI, keys=("src", "iommu"))
    return _checked(RngConfig(src=Path(o.text("src") or DEFAULT_SOURCE), iommu=o.toggle("iommu", False)), CLI)


def from_json(body: object) -> RngConfig:
    j = JsonObject(body, JSON)
    config = RngConfig(src=j.path("src", DEFAULT_SOURCE), iommu=j.boolean("iommu", False))
    # ch's RngConfig has the PCI fields too; the rng is the built-in __rng, where ch puts it.
    j.unsupported("id", "__rng")
    j.unsupported("pci_segment", 0)
    j.unsupported("pci_device_id", None)
    j.close()
    return _checked(config, JSON)


def _checked(config: RngConfig, where: Where) -> RngConfig:
    if config.iommu:
        raise where.error("iommu=on is not supported (plugvm has no virtual IOMMU)")
    return config


class RngError(PlugvmError, OSError):
    """The entropy source cannot be opened."""


class Rng(VirtioDevice):
    device_type = 4
    queue_sizes = (QUEUE_SIZE,)

    def __init__(self, config: RngConfig):
        try:
            # A character device (/dev/urandom) or a file of bytes; never a FIFO, whose
            # writer could stop the device's I/O thread.
            self.fd = open_path(config.src, "--rng", "src", kinds=("char", "file"))
        except HostFileError as e:
            raise RngError(str(e)) from e
        self.queue = None
        self.context = None

    def activate(self, memory, queues, features, context) -> None:
        self.queue, self.context = queues[0], context

    def queue_notify(self, index: int) -> None:
        queue = self.queue
        if queue is None:
            return
        if queue.serve(lambda chain: os.readv(self.fd, chain.writable) if chain.writable else 0):
            self.context.interrupt_queue(0)

    def reset(self) -> None:
        self.queue = self.context = None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


@hookimpl
def plugvm_device_types() -> list[DeviceType]:
    return [DeviceType(name="rng", kind="virtio", cli_option="--rng", config_key="rng", multiple=False,
                       parse=parse, from_json=from_json, create=lambda config, env: Rng(config),
                       fixed_id="__rng", order=30, default=RngConfig, removable=False,
                       help="virtio-rng fed from src (default /dev/urandom)")]
