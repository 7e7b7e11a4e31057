"""virtio-mem's wire formats (virtio 1.2 §5.15.4 and §5.15.6): the config space, and the
requests and responses of its one queue. Little-endian, as every virtio 1.x structure.

A chain is read here and nowhere else: a hostile driver's chain yields a Request, None
(too short to be one: the device answers ERROR) or NoRoom (no space for a response).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from plugvm.virtio.device import DeviceError

DEVICE_TYPE = 24            # virtio 1.2 §5.15.1
QUEUE_SIZE = 128            # ch's

# struct virtio_mem_config: block_size u64, node_id u16, 6 padding, addr u64,
# region_size u64, usable_region_size u64, plugged_size u64, requested_size u64.
CONFIG = struct.Struct("<QH6xQQQQQ")
# struct virtio_mem_req: type u16, 6 padding, then for PLUG/UNPLUG/STATE addr u64,
# nb_blocks u16, 6 padding.
REQUEST = struct.Struct("<H6xQH6x")
# struct virtio_mem_resp: type u16, 6 padding, then for STATE the state u16.
RESPONSE = struct.Struct("<H6xH")

PLUG, UNPLUG, UNPLUG_ALL, STATE = 0, 1, 2, 3                 # VIRTIO_MEM_REQ_*
ACK, NACK, BUSY, ERROR = 0, 1, 2, 3                          # VIRTIO_MEM_RESP_*


class NoRoom(DeviceError):
    """A request chain has less than a response's worth of writable bytes: the device
    cannot even say ERROR, so the transport marks it DEVICE_NEEDS_RESET."""


@dataclass(frozen=True)
class Request:
    type: int
    addr: int
    nb_blocks: int


def read_request(chain) -> Request | None:
    """The request at the start of the chain's readable part, or None when that part
    is shorter than a request. Raises NoRoom when a response does not fit."""
    if chain.writable_len < RESPONSE.size:
        raise NoRoom(f"virtio-mem request chain {chain.head} has {chain.writable_len} writable bytes, "
                     f"less than the {RESPONSE.size} of a response")
    head = bytearray()
    for buf in chain.readable:          # a few buffers at most; copy only what a request needs
        head += buf[:REQUEST.size - len(head)]
        if len(head) == REQUEST.size:
            return Request(*REQUEST.unpack(head))
    return None


def write_response(chain, kind: int, state: int = 0) -> int:
    """Write the response into the chain's writable buffers; returns the bytes written."""
    data = RESPONSE.pack(kind, state)
    done = 0
    for buf in chain.writable:
        n = min(len(buf), len(data) - done)
        buf[:n] = data[done:done + n]
        done += n
        if done == len(data):
            break
    return done
