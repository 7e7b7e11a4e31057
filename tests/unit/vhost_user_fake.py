"""A scriptable vhost-user backend on a thread, for testing the frontend without a daemon:
it records every message (with the fds it received) and answers as the spec says, unless
a test's script says otherwise for a request."""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field

from plugvm.vhost_user import protocol as p
from plugvm.vhost_user.protocol import F_PROTOCOL_FEATURES, ProtocolFeature

VIRTIO_F_VERSION_1 = 1 << 32
ALL_WE_SUPPORT = (ProtocolFeature.MQ.mask | ProtocolFeature.REPLY_ACK.mask
                  | ProtocolFeature.CONFIGURE_MEM_SLOTS.mask)


@dataclass
class Message:
    request: int
    flags: int
    payload: bytes
    fds: list[int] = field(default_factory=list)


def reply(request: int, payload: bytes, flags: int = p.VERSION | p.FLAG_REPLY, size: int | None = None) -> bytes:
    return p.pack_header(request, flags, len(payload) if size is None else size) + payload


class FakeBackend:
    """Serves one end of a socketpair. script maps a Request to f(message) returning None
    (answer normally), "close", "silent", or raw bytes to send instead."""

    def __init__(self, sock: socket.socket, features: int = F_PROTOCOL_FEATURES | VIRTIO_F_VERSION_1,
                 protocol_features: int = ALL_WE_SUPPORT | ProtocolFeature.LOG_SHMFD.mask, queue_num: int = 2,
                 max_mem_slots: int = 32, script: dict | None = None):
        self.sock = sock
        self.answers = {p.Request.GET_FEATURES: features, p.Request.GET_PROTOCOL_FEATURES: protocol_features,
                        p.Request.GET_QUEUE_NUM: queue_num, p.Request.GET_MAX_MEM_SLOTS: max_mem_slots}
        self.script = script or {}
        self.acks: dict[int, int] = {}          # request -> non-zero REPLY_ACK status
        self.bases: dict[int, int] = {}         # queue -> GET_VRING_BASE's answer
        self.received: list[Message] = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _read(self, size: int, first: bool) -> tuple[bytes, list[int]] | None:
        data, fds = b"", []
        while len(data) < size:
            if first and not data:
                chunk, got_fds, _, _ = socket.recv_fds(self.sock, size, 16)
                fds += got_fds
            else:
                chunk = self.sock.recv(size - len(data))
            if not chunk:
                return None
            data += chunk
        return data, fds

    def _run(self) -> None:
        try:
            while (head := self._read(p.HEADER_SIZE, True)) is not None:
                header = p.unpack_header(head[0])
                body = self._read(header.size, False) if header.size else (b"", [])
                if body is None:
                    return
                msg = Message(header.request, header.flags, body[0], head[1])
                self.received.append(msg)
                action = self.script.get(msg.request)
                out = action(msg) if action else None
                if out == "close":
                    self.sock.close()
                    return
                if out == "silent":
                    continue
                self.sock.sendall(out if out is not None else self._answer(msg))
        except OSError:
            return

    def _answer(self, msg: Message) -> bytes:
        if msg.request in self.answers:
            return reply(msg.request, p.pack_u64(self.answers[msg.request]))
        if msg.request == p.Request.GET_VRING_BASE:
            index, _ = p.unpack_vring_state(msg.payload)
            return reply(msg.request, p.pack_vring_state(index, self.bases.get(index, 0)))
        if msg.flags & p.FLAG_NEED_REPLY:
            return reply(msg.request, p.pack_u64(self.acks.get(msg.request, 0)))
        return b""

    def wait(self, count: int, timeout: float = 2.0) -> list[Message]:
        """The messages received, once there are at least `count`."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.received

    def requests(self) -> list[str]:
        return [p.Request(m.request).name for m in self.received]

    def close(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        self.thread.join(2)
        for m in self.received:
            for fd in m.fds:
                os.close(fd)
            m.fds = []
