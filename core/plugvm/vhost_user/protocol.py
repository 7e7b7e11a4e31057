"""The vhost-user wire format (QEMU docs/interop/vhost-user.rst, "Message Specification"):
request codes, header flags, feature bits, and packing of the payloads the frontend sends
and reads. Pure functions over bytes; the Frontend calls them, and tests check them
against the spec's layouts. Every number is in the host's native byte order (the spec:
"All numbers are in the machine native byte order"), hence "=" in the structs.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from plugvm.vhost_user.errors import MessageError


class Request(IntEnum):
    """Front-end message types ("Front-end message types" in the spec)."""

    GET_FEATURES = 1
    SET_FEATURES = 2
    SET_OWNER = 3
    RESET_OWNER = 4             # deprecated; named so a log can say what it saw
    SET_MEM_TABLE = 5
    SET_LOG_BASE = 6
    SET_LOG_FD = 7
    SET_VRING_NUM = 8
    SET_VRING_ADDR = 9
    SET_VRING_BASE = 10
    GET_VRING_BASE = 11
    SET_VRING_KICK = 12
    SET_VRING_CALL = 13
    SET_VRING_ERR = 14
    GET_PROTOCOL_FEATURES = 15
    SET_PROTOCOL_FEATURES = 16
    GET_QUEUE_NUM = 17
    SET_VRING_ENABLE = 18
    SET_BACKEND_REQ_FD = 21     # SET_SLAVE_REQ_FD in older texts
    GET_CONFIG = 24
    SET_CONFIG = 25
    RESET_DEVICE = 34
    GET_MAX_MEM_SLOTS = 36
    ADD_MEM_REG = 37
    REM_MEM_REG = 38
    SET_STATUS = 39
    GET_STATUS = 40


# Header flags: bits 0-1 the version, bit 2 set on every reply, bit 3 asks for a REPLY_ACK.
VERSION = 0x1
VERSION_MASK = 0x3
FLAG_REPLY = 0x4
FLAG_NEED_REPLY = 0x8

# The virtio feature bit a backend sets when it speaks GET/SET_PROTOCOL_FEATURES.
F_PROTOCOL_FEATURES = 1 << 30


class ProtocolFeature(IntEnum):
    """VHOST_USER_PROTOCOL_F_* bit numbers ("Protocol features" in the spec)."""

    MQ = 0
    LOG_SHMFD = 1
    RARP = 2
    REPLY_ACK = 3
    MTU = 4
    BACKEND_REQ = 5
    CROSS_ENDIAN = 6
    CRYPTO_SESSION = 7
    PAGEFAULT = 8
    CONFIG = 9
    BACKEND_SEND_FD = 10
    HOST_NOTIFIER = 11
    INFLIGHT_SHMFD = 12
    RESET_DEVICE = 13
    INBAND_NOTIFICATIONS = 14
    CONFIGURE_MEM_SLOTS = 15
    STATUS = 16

    @property
    def mask(self) -> int:
        return 1 << self.value


def protocol_feature_names(bits: int) -> list[str]:
    """The names of the protocol feature bits set in `bits` (unknown bits as numbers)."""
    names = [f.name for f in ProtocolFeature if bits & f.mask]
    known = sum(f.mask for f in ProtocolFeature)
    names += [str(i) for i in range(64) if bits & ~known & (1 << i)]
    return names


HEADER = struct.Struct("=III")          # request, flags, size
HEADER_SIZE = HEADER.size               # 12
MAX_PAYLOAD = 4096                      # far above the largest payload here (a 264-byte table)
MAX_REGIONS = 8                         # VHOST_MEMORY_BASELINE_NREGIONS: SET_MEM_TABLE's array
MAX_CONFIG_SIZE = 256                   # VHOST_USER_MAX_CONFIG_SIZE

_U64 = struct.Struct("=Q")
_VRING_STATE = struct.Struct("=II")     # index, num
_VRING_ADDR = struct.Struct("=IIQQQQ")  # index, flags, desc, used, avail, log (struct vhost_vring_addr)
_REGION = struct.Struct("=QQQQ")        # guest_phys_addr, memory_size, userspace_addr, mmap_offset
_TABLE_HEAD = struct.Struct("=II")      # nregions, padding
_CONFIG_HEAD = struct.Struct("=III")    # offset, size, flags

VRING_INDEX_MASK = 0xFF                 # bits 0-7 of SET_VRING_KICK/CALL/ERR's u64
VRING_NOFD = 1 << 8                     # bit 8: no fd in the ancillary data (poll instead)


@dataclass(frozen=True)
class Header:
    """A message's 12-byte header."""

    request: int
    flags: int
    size: int

    @property
    def version(self) -> int:
        return self.flags & VERSION_MASK


def pack_header(request: int, flags: int, size: int) -> bytes:
    return HEADER.pack(request, flags, size)


def unpack_header(data: bytes) -> Header:
    _exact(data, HEADER_SIZE, "header")
    return Header(*HEADER.unpack(data))


def _exact(data: bytes, size: int, what: str) -> None:
    if len(data) != size:
        raise MessageError(f"a vhost-user {what} is {size} bytes, not {len(data)}")


def _packing(layout: struct.Struct, what: str, *values: int) -> bytes:
    try:
        return layout.pack(*values)
    except struct.error as e:
        raise MessageError(f"a vhost-user {what} cannot hold {values}: {e}") from e


def pack_u64(value: int) -> bytes:
    return _packing(_U64, "u64", value)


def unpack_u64(data: bytes) -> int:
    _exact(data, _U64.size, "u64 payload")
    return _U64.unpack(data)[0]


def pack_vring_state(index: int, num: int) -> bytes:
    return _packing(_VRING_STATE, "vring state", index, num)


def unpack_vring_state(data: bytes) -> tuple[int, int]:
    """(index, num) of a vring state description."""
    _exact(data, _VRING_STATE.size, "vring state")
    return _VRING_STATE.unpack(data)


@dataclass(frozen=True)
class VringAddress:
    """A vring address description: the rings' addresses in the frontend's address space
    (user addresses, as VIRTIO_F_IOMMU_PLATFORM is not negotiated)."""

    index: int
    desc_user: int
    used_user: int
    avail_user: int
    log_guest: int = 0
    flags: int = 0          # VHOST_VRING_F_LOG (bit 0) only; plugvm does not log


def pack_vring_address(a: VringAddress) -> bytes:
    return _packing(_VRING_ADDR, "vring address", a.index, a.flags, a.desc_user, a.used_user, a.avail_user,
                    a.log_guest)


def unpack_vring_address(data: bytes) -> VringAddress:
    _exact(data, _VRING_ADDR.size, "vring address")
    index, flags, desc, used, avail, log = _VRING_ADDR.unpack(data)
    return VringAddress(index, desc, used, avail, log, flags)


@dataclass(frozen=True)
class MemoryRegion:
    """One region of a memory table as it travels: where the guest sees it, its size,
    where the frontend maps it, and its offset in the fd sent beside it."""

    guest_addr: int
    size: int
    user_addr: int
    mmap_offset: int


def _pack_region(r: MemoryRegion) -> bytes:
    return _packing(_REGION, "memory region", r.guest_addr, r.size, r.user_addr, r.mmap_offset)


def pack_memory_table(regions: list[MemoryRegion]) -> bytes:
    """SET_MEM_TABLE's payload. The array is always 8 entries long (unused ones zero), as
    QEMU sends it and libvhost-user expects: nregions says how many count."""
    if not 0 < len(regions) <= MAX_REGIONS:
        raise MessageError(f"a vhost-user memory table holds 1 to {MAX_REGIONS} regions, not {len(regions)}")
    body = b"".join(_pack_region(r) for r in regions)
    return _TABLE_HEAD.pack(len(regions), 0) + body + bytes(_REGION.size * (MAX_REGIONS - len(regions)))


def unpack_memory_table(data: bytes) -> list[MemoryRegion]:
    if len(data) < _TABLE_HEAD.size:
        raise MessageError(f"a vhost-user memory table of {len(data)} bytes has no header")
    count, _ = _TABLE_HEAD.unpack_from(data)
    if count > MAX_REGIONS:
        raise MessageError(f"a vhost-user memory table says nregions={count}, above {MAX_REGIONS}")
    _exact(data, _TABLE_HEAD.size + _REGION.size * MAX_REGIONS, "memory table")
    return [MemoryRegion(*_REGION.unpack_from(data, _TABLE_HEAD.size + i * _REGION.size)) for i in range(count)]


def pack_single_region(region: MemoryRegion) -> bytes:
    """ADD_MEM_REG / REM_MEM_REG's payload: 8 bytes of padding, then the region."""
    return bytes(8) + _pack_region(region)


def unpack_single_region(data: bytes) -> MemoryRegion:
    _exact(data, 8 + _REGION.size, "single memory region")
    return MemoryRegion(*_REGION.unpack_from(data, 8))


def pack_vring_fd(index: int, has_fd: bool) -> bytes:
    """SET_VRING_KICK/CALL/ERR's u64: the queue index in bits 0-7, bit 8 set when no fd
    travels with the message."""
    if not 0 <= index <= VRING_INDEX_MASK:
        raise MessageError(f"a vhost-user vring index is 0..{VRING_INDEX_MASK}, not {index}")
    return _U64.pack(index | (0 if has_fd else VRING_NOFD))


def unpack_vring_fd(data: bytes) -> tuple[int, bool]:
    """(index, has_fd) of a SET_VRING_KICK/CALL/ERR payload."""
    value = unpack_u64(data)
    if value & ~(VRING_INDEX_MASK | VRING_NOFD):
        raise MessageError(f"a vhost-user vring fd payload has reserved bits set: {value:#x}")
    return value & VRING_INDEX_MASK, not value & VRING_NOFD


def pack_config(offset: int, size: int, flags: int = 0, payload: bytes | None = None) -> bytes:
    """GET_CONFIG/SET_CONFIG's payload: offset, size, flags, then `size` bytes (zeros
    for GET_CONFIG, where the backend fills them in)."""
    if not 0 <= size <= MAX_CONFIG_SIZE:
        raise MessageError(f"a vhost-user config access is 0..{MAX_CONFIG_SIZE} bytes, not {size}")
    payload = bytes(size) if payload is None else payload
    if len(payload) != size:
        raise MessageError(f"a vhost-user config access of size={size} carries {len(payload)} bytes")
    return _packing(_CONFIG_HEAD, "config header", offset, size, flags) + payload


def unpack_config(data: bytes) -> tuple[int, int, bytes]:
    """(offset, flags, payload) of a config space payload."""
    if len(data) < _CONFIG_HEAD.size:
        raise MessageError(f"a vhost-user config payload of {len(data)} bytes has no header")
    offset, size, flags = _CONFIG_HEAD.unpack_from(data)
    _exact(data, _CONFIG_HEAD.size + size, "config payload")
    return offset, flags, bytes(data[_CONFIG_HEAD.size:])
