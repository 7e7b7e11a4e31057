"""The virtio-vsock packet header (virtio 1.2 §5.10.6, struct virtio_vsock_hdr) and the
checks a packet from the guest passes before anything acts on it.

A packet is one descriptor chain: the 44-byte little-endian header, then `len` bytes
of payload, in whatever buffers the driver split it into (Linux puts header and payload
in one buffer or two). Readers and writers here work on the chain's memoryviews.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from plugvm.errors import PlugvmError

# src_cid u64, dst_cid u64, src_port u32, dst_port u32, len u32, type u16, op u16,
# flags u32, buf_alloc u32, fwd_cnt u32 (§5.10.6).
HEADER = struct.Struct("<QQIIIHHIII")
HEADER_SIZE = HEADER.size           # 44
HOST_CID = 2                        # VMADDR_CID_HOST: the VMM's side of every connection
TYPE_STREAM = 1
OP_REQUEST, OP_RESPONSE, OP_RST, OP_SHUTDOWN, OP_RW, OP_CREDIT_UPDATE, OP_CREDIT_REQUEST = range(1, 8)
OPS = range(OP_REQUEST, OP_CREDIT_REQUEST + 1)
SHUTDOWN_RCV = 1                    # VIRTIO_VSOCK_SHUTDOWN_F_RECEIVE: the sender takes no more data
SHUTDOWN_SEND = 2                   # VIRTIO_VSOCK_SHUTDOWN_F_SEND: the sender sends no more data
SHUTDOWN_BOTH = SHUTDOWN_RCV | SHUTDOWN_SEND
# Linux never sends more per packet (VIRTIO_VSOCK_MAX_PKT_BUF_SIZE); a larger len is hostile.
MAX_PAYLOAD = 64 * 1024
U32 = 0xFFFF_FFFF


class ShortPacketError(PlugvmError, ValueError):
    """A chain too short for a header: nothing in it can be answered, so it is dropped."""


class MalformedPacketError(PlugvmError, ValueError):
    """A packet whose header reads but which breaks a rule (its len); `header` is the
    header, so that the connection it names gets a reset."""

    def __init__(self, message: str, header: Header):
        super().__init__(message)
        self.header = header


@dataclass(slots=True)
class Header:
    src_cid: int
    dst_cid: int
    src_port: int
    dst_port: int
    len: int
    type: int
    op: int
    flags: int = 0
    buf_alloc: int = 0
    fwd_cnt: int = 0

    def pack(self) -> bytes:
        return HEADER.pack(self.src_cid, self.dst_cid, self.src_port, self.dst_port, self.len, self.type, self.op,
                           self.flags, self.buf_alloc, self.fwd_cnt)


def span(views: list[memoryview], offset: int, length: int) -> list[memoryview]:
    """The slices of `views` (read as one buffer) that cover [offset, offset + length);
    fewer bytes when the views end first."""
    out = []
    for view in views:
        if length <= 0:
            break
        if offset >= len(view):
            offset -= len(view)
            continue
        piece = view[offset:offset + length]
        out.append(piece)
        length -= len(piece)
        offset = 0
    return out


def read_packet(readable: list[memoryview]) -> tuple[Header, list[memoryview]]:
    """The header and payload views of a TX chain's readable buffers. ShortPacketError
    when no header fits; MalformedPacketError when len is past MAX_PAYLOAD or past the
    chain. Bytes after `len` are ignored (a driver may offer a larger buffer)."""
    head = b"".join(span(readable, 0, HEADER_SIZE))
    if len(head) < HEADER_SIZE:
        raise ShortPacketError(f"a {len(head)}-byte chain holds no {HEADER_SIZE}-byte header")
    header = Header(*HEADER.unpack(head))
    if header.len > MAX_PAYLOAD:
        raise MalformedPacketError(f"len {header.len} is past the {MAX_PAYLOAD}-byte packet bound", header)
    payload = span(readable, HEADER_SIZE, header.len)
    if sum(map(len, payload)) < header.len:
        raise MalformedPacketError(f"len {header.len} is past the end of the chain", header)
    return header, payload


def write_header(writable: list[memoryview], header: Header) -> None:
    """Put the header at the start of an RX chain's writable buffers (room checked by the caller)."""
    data = header.pack()
    done = 0
    for piece in span(writable, 0, HEADER_SIZE):
        piece[:] = data[done:done + len(piece)]
        done += len(piece)
