"""The virtio-blk device (virtio 1.2 §5.2) over a raw image: each request is one
preadv/pwritev between the image and the guest's buffers, with no copy in between.
Reads and writes of Linux's shape are served in C (fast.py, blk.c) with the same checks;
this module serves every other request, and all of them under PLUGVM_BLK_C=off."""

from __future__ import annotations

import fcntl
import os
import struct

from plugvm.errors import PlugvmError
from plugvm.host_files import HostFileError, open_path
from plugvm.logs import get_logger
from plugvm.virtio.device import VirtioDevice

log = get_logger(__name__)

SECTOR = 512
VIRTIO_BLK_F_SEG_MAX = 1 << 2
VIRTIO_BLK_F_RO = 1 << 5
VIRTIO_BLK_F_BLK_SIZE = 1 << 6
VIRTIO_BLK_F_FLUSH = 1 << 9
VIRTIO_BLK_F_MQ = 1 << 12
T_IN, T_OUT, T_FLUSH, T_GET_ID = 0, 1, 4, 8
S_OK, S_IOERR, S_UNSUPP = 0, 1, 2
HEADER = struct.Struct("<IIQ")       # type, reserved, sector
ID_BYTES = 20


class DiskError(PlugvmError, OSError):
    """The image cannot be opened or locked."""


def split_views(views: list[memoryview], at: int) -> tuple[list[memoryview], list[memoryview]]:
    """The buffers as two lists: the first `at` bytes, and the rest."""
    head, tail = [], []
    for view in views:
        if at <= 0:
            tail.append(view)
        elif len(view) <= at:
            head.append(view)
            at -= len(view)
        else:
            head.append(view[:at])
            tail.append(view[at:])
            at = 0
    return head, tail


class VirtioBlk(VirtioDevice):
    device_type = 2

    def __init__(self, config, device_name: str = "--disk"):
        self.config = config
        try:
            self.fd = open_path(config.path, device_name, "path", kinds=("file", "block"), write=not config.readonly,
                                extra_flags=os.O_DIRECT if config.direct else 0)
        except HostFileError as e:
            raise DiskError(str(e)) from e
        try:
            # As cloud-hypervisor: two VMs must not write one image (a shared lock for read-only).
            fcntl.lockf(self.fd, (fcntl.LOCK_SH if config.readonly else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            self.size = os.lseek(self.fd, 0, os.SEEK_END)     # also right for a block device
        except OSError as e:
            os.close(self.fd)
            why = "it is locked by another process" if e.errno in (11, 13) else e.strerror
            raise DiskError(f"{device_name}: cannot use path={str(config.path)!r}: {why}") from e
        self.capacity = self.size // SECTOR
        # Autodetected raw images keep sector 0 read-only, as cloud-hypervisor does, so that a
        # guest cannot write a header that would make the host probe the image as another format.
        self.protect_sector0 = config.image_type == "Unknown"
        self.queue_sizes = (config.queue_size,) * config.num_queues
        self.serial = (config.serial or "").encode()[:ID_BYTES].ljust(ID_BYTES, b"\0")
        self.queues = []
        self.context = None
        self._fast = None         # fast.FastDisk while active, unless PLUGVM_BLK_C=off
        # cloud-hypervisor's block counters (vm.counters), kept by the I/O thread.
        self.counters = {"read_bytes": 0, "write_bytes": 0, "read_ops": 0, "write_ops": 0}

    def device_features(self) -> int:
        features = VIRTIO_BLK_F_SEG_MAX | VIRTIO_BLK_F_BLK_SIZE | VIRTIO_BLK_F_FLUSH
        if self.config.readonly:
            features |= VIRTIO_BLK_F_RO
        if self.config.num_queues > 1:
            features |= VIRTIO_BLK_F_MQ
        return features

    def config_bytes(self) -> bytes:
        # capacity, size_max, seg_max, geometry (c/h/s), blk_size, topology (4 fields), writeback, unused, num_queues
        return struct.pack("<QII HBB I BBHI BB H", self.capacity, 0, self.config.queue_size - 2, 0, 0, 0, SECTOR,
                           0, 0, 0, 0, 0, 0, self.config.num_queues)

    def activate(self, memory, queues, features, context) -> None:
        self.queues, self.context = queues, context
        self._fast = self._fast_disk(queues)

    def _fast_disk(self, queues):
        """blk.c for the hot requests, when it is built, wanted and speaks the queues' ABI."""
        from plugvm_virtio_blk import fast

        if not fast.wanted() or not all(map(fast.FastDisk.speaks, queues)):
            return None
        return fast.FastDisk(str(self.config.path), self.fd, self.size, self.config.readonly, self.protect_sector0)

    def queue_notify(self, index: int) -> None:
        queue = self.queues[index] if index < len(self.queues) else None
        if queue is None:
            return
        fast = self._fast
        if fast is None:
            if queue.serve(self._request):
                self.context.interrupt_queue(index)
            return
        try:
            fast.serve(queue, self._request)
        finally:
            fast.take_counters(self.counters)
        if queue.needs_interrupt():
            self.context.interrupt_queue(index)

    def _request(self, chain) -> int:
        """Serve one request; returns the bytes written into the guest's buffers."""
        readable, writable = chain.readable, chain.writable
        # Linux puts the header, each data segment and the status in buffers of their own:
        # take that shape without splitting, and any other shape the slow way.
        if readable and len(readable[0]) == HEADER.size:
            kind, _, sector = HEADER.unpack(readable[0])
            data_out = readable[1:]
        else:
            if chain.readable_len < HEADER.size:
                return 0        # no header: nothing to answer (the driver broke the rules)
            header, data_out = split_views(readable, HEADER.size)
            kind, _, sector = HEADER.unpack(b"".join(bytes(v) for v in header))
        if writable and len(writable[-1]) == 1:
            data_in, status_view = writable[:-1], writable[-1]
        else:
            if chain.writable_len < 1:
                return 0        # no room for a status
            data_in, status_views = split_views(writable, chain.writable_len - 1)
            status_view = status_views[-1]
        status, done = self._serve(kind, sector, data_out, data_in)
        status_view[-1] = status
        return done + 1

    def _serve(self, kind: int, sector: int, data_out, data_in) -> tuple[int, int]:
        try:
            if kind == T_IN:
                length = sum(map(len, data_in))
                if not self._in_range(sector, length):
                    return S_IOERR, 0
                done = os.preadv(self.fd, data_in, sector * SECTOR) if data_in else 0
                self.counters["read_ops"] += 1
                self.counters["read_bytes"] += done
                return S_OK, done
            if kind == T_OUT:
                length = sum(map(len, data_out))
                if self.config.readonly or not self._in_range(sector, length) or (self.protect_sector0 and sector == 0):
                    return S_IOERR, 0
                written = os.pwritev(self.fd, data_out, sector * SECTOR) if data_out else 0
                self.counters["write_ops"] += 1
                self.counters["write_bytes"] += written
                return (S_OK if written == length else S_IOERR), 0
            if kind == T_FLUSH:
                if not self.config.readonly:
                    os.fdatasync(self.fd)
                return S_OK, 0
            if kind == T_GET_ID:
                n = 0
                for view in data_in:
                    chunk = self.serial[n:n + len(view)]
                    view[:len(chunk)] = chunk
                    n += len(chunk)
                return S_OK, n
            return S_UNSUPP, 0
        except OSError as e:
            log.warning("disk I/O failed", path=str(self.config.path), error=e.strerror)
            return S_IOERR, 0

    def _in_range(self, sector: int, length: int) -> bool:
        return length % SECTOR == 0 and sector * SECTOR + length <= self.size

    def reset(self) -> None:
        self.queues, self.context, self._fast = [], None, None

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)      # also drops the lock
            self.fd = -1
