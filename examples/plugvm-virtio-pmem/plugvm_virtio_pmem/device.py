"""The virtio-pmem device (virtio 1.2 §5.19): a host file mapped at a guest-physical
range of its own (DeviceEnv.guest_ranges), which the guest's driver uses as
persistent memory, and one request queue on which the guest asks for a flush.

The guest reads and writes the range directly (a KVM memory slot; no exit, no
Python); the device's only work is the flush: fsync of the file, as
cloud-hypervisor's sync_all, answered VIRTIO_PMEM_RESP_TYPE_OK or _EIO.
"""

from __future__ import annotations

import os
import struct

from plugvm.errors import PlugvmError
from plugvm.host_files import HostFileError, open_path
from plugvm.logs import get_logger
from plugvm.virtio.device import VirtioDevice

from plugvm_virtio_pmem.config import ALIGNMENT, PmemConfig

log = get_logger(__name__)

DEVICE_TYPE = 27             # virtio 1.2 §5: pmem
QUEUE_SIZE = 256             # cloud-hypervisor's QUEUE_SIZE
REQ_TYPE_FLUSH = 0           # struct virtio_pmem_req { le32 type; }
RESP_OK, RESP_EIO = 0, 1     # struct virtio_pmem_resp { le32 ret; }
CONFIG = struct.Struct("<QQ")            # struct virtio_pmem_config { le64 start; le64 size; }
LE32 = struct.Struct("<I")


class PmemError(PlugvmError, OSError):
    """The file cannot be opened, sized or mapped into the guest."""


def create(config: PmemConfig, env) -> VirtioPmem:
    """The DeviceType's factory: the device, with its file mapped through env.guest_ranges."""
    ranges = getattr(env, "guest_ranges", None)
    if ranges is None:
        raise PmemError("--pmem: this plugvm offers devices no guest-physical ranges (DeviceEnv.guest_ranges)")
    return VirtioPmem(config, ranges)


def read_head(views: list[memoryview], length: int) -> bytes | None:
    """The first `length` bytes of the buffers (which may split them anywhere), or None
    if they hold fewer; copies no more than that, however large the buffers."""
    out = bytearray()
    for view in views:
        out += view[:length - len(out)]
        if len(out) == length:
            return bytes(out)
    return None


def write_head(views: list[memoryview], data: bytes) -> None:
    """Write `data` at the start of the buffers (the caller checked they hold it)."""
    done = 0
    for view in views:
        n = min(len(view), len(data) - done)
        view[:n] = data[done:done + n]
        done += n
        if done == len(data):
            return


class VirtioPmem(VirtioDevice):
    device_type = DEVICE_TYPE
    queue_sizes = (QUEUE_SIZE,)

    def __init__(self, config: PmemConfig, ranges):
        self.config = config
        self.fd = self._open(config)
        self.range = None
        try:
            self.size = self._size(config)
            # discard_writes: MAP_PRIVATE over a read-only fd, so the guest's writes stay in
            # this process's copy-on-write pages and never reach the file.
            self.range = ranges.map(self.fd, self.size, shared=not config.discard_writes)
        except BaseException as e:
            os.close(self.fd)
            self.fd = -1
            if isinstance(e, PlugvmError) and not isinstance(e, PmemError):
                raise PmemError(f"--pmem: cannot map file={str(config.file)!r} into the guest: {e}") from e
            raise
        self.queues, self.context = [], None
        self.counters = {"flushes": 0, "flush_errors": 0, "bad_requests": 0}

    @staticmethod
    def _open(config: PmemConfig) -> int:
        path = config.file
        if os.path.isdir(path):
            # As cloud-hypervisor: a directory means an anonymous temporary file there
            # (O_TMPFILE), of `size` bytes, gone when the device is. It is ours alone, so
            # it is opened read-write even with discard_writes (O_TMPFILE needs it).
            if config.size is None:
                raise PmemError(f"--pmem: file={str(path)!r} is a directory: size is required to create a "
                                f"temporary file in it")
            try:
                fd = os.open(path, os.O_TMPFILE | os.O_RDWR | os.O_CLOEXEC, 0o600)
            except OSError as e:
                raise PmemError(f"--pmem: cannot create a temporary file in file={str(path)!r}: "
                                f"{e.strerror or e}") from e
            try:
                os.ftruncate(fd, config.size)
            except OSError as e:
                os.close(fd)
                raise PmemError(f"--pmem: cannot make a temporary file of size={config.size} in "
                                f"file={str(path)!r}: {e.strerror or e}") from e
            return fd
        try:
            return open_path(path, "--pmem", "file", kinds=("file", "block"), write=not config.discard_writes)
        except HostFileError as e:
            raise PmemError(str(e)) from e

    def _size(self, config: PmemConfig) -> int:
        length = os.lseek(self.fd, 0, os.SEEK_END)        # also a block device's size
        shown = f"file={str(config.file)!r}"
        if config.size is None:
            if length == 0 or length % ALIGNMENT:
                raise PmemError(f"--pmem: {shown} is {length} bytes, not a positive multiple of "
                                f"{ALIGNMENT >> 20} MiB (give size=)")
            return length
        if config.size > length:
            # A mapping past the end of the file would fault (SIGBUS) when the guest touched
            # it; the file is the user's, so it is not lengthened behind their back.
            raise PmemError(f"--pmem: size={config.size} bytes is larger than {shown} ({length} bytes)")
        return config.size

    def config_bytes(self) -> bytes:
        return CONFIG.pack(self.range.guest_addr, self.range.size)

    def activate(self, memory, queues, features, context) -> None:
        self.queues, self.context = queues, context

    def queue_notify(self, index: int) -> None:
        queue = self.queues[index] if 0 <= index < len(self.queues) else None
        if queue is None:
            return
        if queue.serve(self._request):
            self.context.interrupt_queue(index)

    def _request(self, chain) -> int:
        """Serve one request; the bytes written into the guest's buffers. As in
        cloud-hypervisor, a chain without a 4-byte request or room for a 4-byte status is
        given back with nothing written (logged), and the device goes on."""
        head = read_head(chain.readable, LE32.size)
        if head is None or chain.writable_len < LE32.size:
            self.counters["bad_requests"] += 1
            log.warning("malformed virtio-pmem request", id=self.config.id, readable=chain.readable_len,
                        writable=chain.writable_len)
            return 0
        (kind,) = LE32.unpack(head)
        write_head(chain.writable, LE32.pack(self._serve(kind)))
        return LE32.size

    def _serve(self, kind: int) -> int:
        if kind != REQ_TYPE_FLUSH:
            self.counters["bad_requests"] += 1
            log.warning("unknown virtio-pmem request type", id=self.config.id, type=kind)
            return RESP_EIO
        try:
            # fsync writes back the pages the guest dirtied through the shared mapping.
            os.fsync(self.fd)
        except OSError as e:
            self.counters["flush_errors"] += 1
            log.warning("virtio-pmem flush failed", id=self.config.id, file=str(self.config.file), error=e.strerror)
            return RESP_EIO
        self.counters["flushes"] += 1
        return RESP_OK

    def reset(self) -> None:
        self.queues, self.context = [], None

    def close(self) -> None:
        if self.range is not None:
            self.range.close()          # the slot first, then the mapping (DeviceMemory's order)
            self.range = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
