"""blk.c through cffi (plugvm_virtio_blk._fast): a disk's IN and OUT requests served in C
over the core's C chain walk, with the GIL released. bench/blk.py measured why: in
Python, a 4 KiB read cost ~4 µs beyond preadv's ~1.2 µs.

PLUGVM_BLK_C=off keeps every request in Python (device.py), as does a queue whose C
walk speaks another ABI than the one blk.c was built for.
"""

from __future__ import annotations

import os

from plugvm.logs import get_logger
from plugvm.virtio.queue import VirtqueueError

from plugvm_virtio_blk._fast import ffi, lib

log = get_logger(__name__)

ENV = "PLUGVM_BLK_C"


def wanted() -> bool:
    return os.environ.get(ENV, "").lower() not in ("off", "0", "no")


class FastDisk:
    """The C side of one VirtioBlk: its image and counters, for blk_serve()."""

    def __init__(self, path: str, fd: int, size: int, readonly: bool, protect_sector0: bool):
        self.path = path
        self.disk = d = ffi.new("struct blk_disk *")
        d.fd, d.size, d.readonly, d.protect_sector0 = fd, size, readonly, protect_sector0

    @staticmethod
    def speaks(queue) -> bool:
        """Whether this queue's C walk has the ABI blk.c was built for."""
        return queue.c_ring().abi == lib.VQ_ABI

    def serve(self, queue, answer) -> None:
        """Answer every available request: IN and OUT of Linux's shape in C, and any
        other one popped by C but handed back here, through `answer(chain)` (device.py's
        own), and pushed. VirtqueueError when the guest broke the queue's rules."""
        ring = queue.c_ring()
        api = ffi.cast("const struct vq_api *", ring.api)
        disk = self.disk
        while True:
            with ring as address:
                rc = lib.blk_serve(ffi.cast("void *", address), api, disk)
            if rc == 0:
                return
            if rc < 0:
                raise VirtqueueError(ring.error())
            head = disk.handed_back
            queue.push(head, answer(queue.walk(head)))

    def take_counters(self, counters: dict) -> None:
        """Add what C counted since the last call to `counters` (vm.counters), and log
        the last I/O error C met, as device.py logs its own."""
        d = self.disk
        counters["read_ops"] += d.read_ops
        counters["read_bytes"] += d.read_bytes
        counters["write_ops"] += d.write_ops
        counters["write_bytes"] += d.write_bytes
        d.read_ops = d.read_bytes = d.write_ops = d.write_bytes = 0
        if d.error:
            log.warning("disk I/O failed", path=self.path, error=os.strerror(d.error))
            d.error = 0
