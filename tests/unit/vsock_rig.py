"""A guest driver for the vsock device, in-process: three queues in a GuestMemory, the
device activated with a RecordingContext, and helpers that send packets, offer RX
buffers, run the host side's epoll and read what the device gave the guest."""

from __future__ import annotations

import select
import struct
from dataclasses import dataclass, field

from plugvm.memory import GuestMemory
from plugvm.testing.virtq_driver import DriverQueue, RecordingContext

from plugvm_vsock.config import VsockConfig
from plugvm_vsock.device import RX, TX, VirtioVsock
from plugvm_vsock.packet import (HEADER, HEADER_SIZE, HOST_CID, OP_CREDIT_UPDATE, OP_REQUEST, OP_RESPONSE, OP_RW,
                                 TYPE_STREAM, Header)

MiB = 1 << 20
GUEST_CID = 3
RX_BUF = 4096 + HEADER_SIZE       # Linux's RX buffer: header + 4 KiB (VIRTIO_VSOCK_DEFAULT_RX_BUF_SIZE)
GUEST_BUF_ALLOC = 256 * 1024


@dataclass
class GuestPort:
    """What the guest side of one connection has seen, and the credit it gives."""

    port: int
    host_port: int
    data: bytearray = field(default_factory=bytearray)
    fwd_cnt: int = 0
    buf_alloc: int = GUEST_BUF_ALLOC


class Rig:
    def __init__(self, socket_path, rx_buffers: int = 64):
        self.memory = GuestMemory(16 * MiB)
        self.rxq = DriverQueue(self.memory, 0x10000, 256, data_size=2 * MiB)
        self.txq = DriverQueue(self.memory, 0x400000, 256, data_size=4 * MiB)
        self.evq = DriverQueue(self.memory, 0xA00000, 256, data_size=64 * 1024)
        self.context = RecordingContext()
        self.device = VirtioVsock(VsockConfig(cid=GUEST_CID, socket=socket_path))
        self.queues = [self.rxq.device_queue(), self.txq.device_queue(), self.evq.device_queue()]
        self.device.activate(self.memory, self.queues, 0, self.context)
        self.rx_addrs: dict[int, int] = {}
        for _ in range(rx_buffers):
            head, [(addr, _)] = self.rxq.add(writable=[RX_BUF])
            self.rx_addrs[head] = addr
        self.received: list[tuple[Header, bytes]] = []

    # --- guest → device ----------------------------------------------------------------------

    def send(self, op: int, src_port: int, dst_port: int, payload: bytes = b"", *, flags: int = 0,
             buf_alloc: int = GUEST_BUF_ALLOC, fwd_cnt: int = 0, src_cid: int = GUEST_CID,
             dst_cid: int = HOST_CID, type_: int = TYPE_STREAM, length: int | None = None,
             raw: bytes | None = None) -> None:
        if raw is None:
            raw = HEADER.pack(src_cid, dst_cid, src_port, dst_port, len(payload) if length is None else length,
                              type_, op, flags, buf_alloc, fwd_cnt) + payload
        if self.txq.next_data + len(raw) > self.txq.data_end:
            self.txq.recycle()
        self.txq.add(readable=[raw])
        self.device.queue_notify(TX)
        self.txq.take_used()

    # --- device → guest ----------------------------------------------------------------------

    def pump(self, rounds: int = 50, timeout: float = 0.05) -> list[tuple[Header, bytes]]:
        """Run the host side until it is quiet; the packets the guest got meanwhile, which
        also land in self.received. RX buffers are given back as they are read."""
        got = []
        for _ in range(rounds):
            got += self.take()
            fd = self.device.poller.fileno()
            if not select.select([fd], [], [], timeout)[0]:
                break
            self.context.watched[fd]()
        got += self.take()
        return got

    def take(self) -> list[tuple[Header, bytes]]:
        out, heads = [], []
        for head, length in self.rxq.take_used():
            raw = self.memory.read(self.rx_addrs[head], length)
            header = Header(*HEADER.unpack(raw[:HEADER_SIZE]))
            out.append((header, bytes(raw[HEADER_SIZE:])))
            heads.append(head)
        if heads:
            self.rxq.resubmit(heads)
            self.device.queue_notify(RX)
        self.received += out
        return out

    # --- a guest socket's view ---------------------------------------------------------------

    def guest_connect(self, guest_port: int, host_port: int) -> Header:
        self.send(OP_REQUEST, guest_port, host_port)
        [(header, _)] = [p for p in self.pump() if p[0].dst_port == guest_port]
        return header

    def accept(self, request: Header) -> GuestPort:
        """The guest's listener answers a REQUEST from the host."""
        assert request.op == OP_REQUEST and request.dst_cid == GUEST_CID
        self.send(OP_RESPONSE, request.dst_port, request.src_port)
        return GuestPort(request.dst_port, request.src_port)

    def consume(self, port: GuestPort, packets) -> None:
        """The guest application reads what arrived on `port` and tells the host its credit."""
        before = port.fwd_cnt
        for header, payload in packets:
            if header.op == OP_RW and header.dst_port == port.port:
                port.data += payload
                port.fwd_cnt += len(payload)
        if port.fwd_cnt != before:
            self.send(OP_CREDIT_UPDATE, port.port, port.host_port, fwd_cnt=port.fwd_cnt, buf_alloc=port.buf_alloc)

    def close(self) -> None:
        self.device.close()
        for q in self.queues:
            q.close()
        self.memory.close()


def ops(packets) -> list[int]:
    return [h.op for h, _ in packets]


u32 = struct.Struct("<I")
