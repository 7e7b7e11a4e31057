"""virtio-fs (virtio 1.2 §5.11) as cloud-hypervisor's (virtio-devices/src/vhost_user/fs.rs;
notes §3f): device 26, queue 0 the high-priority queue and 1..num_queues the request
queues, the config space `tag[36]` and `num_request_queues`; the queues themselves are
virtiofsd's, reached over vhost-user (plugvm.vhost_user): the guest's kicks go from KVM
to virtiofsd on the ioeventfds, and its interrupts from virtiofsd to KVM on the irqfds,
so no request passes through Python.

The device's own work is the control channel: connect and negotiate when it is created
(boot or hot-add), hand virtiofsd the memory table and the rings when the driver sets
DRIVER_OK, pass RAM added later on (plugvm_memory_added), stop the rings on reset, and
watch the socket: virtiofsd going away breaks this device (DEVICE_NEEDS_RESET) and
nothing else. A guest reboot keeps the connection (handover()), because virtiofsd exits
when its frontend hangs up: the next boot's device takes it over, as QEMU keeps its
vhost-user devices connected across a reset.
"""

from __future__ import annotations

import os
import socket
import struct
from dataclasses import dataclass

from plugvm.errors import PlugvmError
from plugvm.logs import get_logger
from plugvm.vhost_user import (F_PROTOCOL_FEATURES, Frontend, MemoryTable, Negotiation, VhostUserError, VringConfig)
from plugvm.virtio.device import VIRTIO_F_EVENT_IDX, VIRTIO_F_VERSION_1, DeviceError, VirtioDevice
from plugvm.virtio.queue import VirtqueueError

from plugvm_virtio_fs.config import TAG_MAX, FsConfig
from plugvm_virtio_fs.takeover import Takeover

log = get_logger(__name__)
DEVICE_TYPE = 26
BOOT_CONNECT_TIMEOUT = 60.0       # cloud-hypervisor's: every 100 ms for up to a minute
HOTPLUG_CONNECT_TIMEOUT = 3.0     # an API request holds the VMM: a socket nobody serves fails soon


class FsError(PlugvmError, RuntimeError):
    """The file system cannot be attached: memory not shared, or virtiofsd unreachable or unfit."""


@dataclass
class Connection:
    """What a boot hands the next one: the open frontend and what it negotiated."""

    frontend: Frontend
    negotiation: Negotiation
    socket: str

    def close(self) -> None:
        self.frontend.close()


def _connect(config: FsConfig, timeout: float) -> Connection:
    path = str(config.socket)
    try:
        frontend = Frontend.connect(path, timeout)
    except VhostUserError as e:
        raise FsError(f"--fs socket={path}: {e}") from e
    try:
        negotiation = frontend.negotiate(queues=1 + config.num_queues)
    except VhostUserError as e:
        frontend.close()
        raise FsError(f"--fs socket={path}: virtiofsd did not negotiate: {e}") from e
    if not negotiation.features & VIRTIO_F_VERSION_1:
        frontend.close()
        raise FsError(f"--fs socket={path}: the backend does not offer VIRTIO_F_VERSION_1")
    return Connection(frontend, negotiation, path)


class VirtioFs(VirtioDevice):
    device_type = DEVICE_TYPE
    external_queues = True

    def __init__(self, config: FsConfig, memory_config, connection: Connection | None = None, *,
                 hotplug: bool = False):
        # As cloud-hypervisor validates: virtiofsd maps guest RAM through its memfds, which
        # needs them shared, before anything is opened.
        if not memory_config.shared:
            if connection is not None:
                connection.close()
            raise FsError("--fs: guest memory must be shared with virtiofsd: boot the VM with --memory shared=on")
        self.config = config
        self.queue_sizes = (config.queue_size,) * (1 + config.num_queues)
        self.connection = connection or _connect(config, HOTPLUG_CONNECT_TIMEOUT if hotplug else BOOT_CONNECT_TIMEOUT)
        self.table: MemoryTable | None = None
        self.memory = None
        self.context = None
        self.started: list[int] = []
        self.queues: list = []              # the ExternalQueues of the running driver
        self.features = 0
        self.takeovers: list[Takeover] = []  # once virtiofsd is gone: plugvm answers the queues
        self._handed_over = False

    @property
    def frontend(self) -> Frontend:
        return self.connection.frontend

    def device_features(self) -> int:
        # What virtiofsd serves (VERSION_1, EVENT_IDX, INDIRECT_DESC, ...), less the
        # vhost-user bit, which is the control channel's and not the guest's.
        return self.connection.negotiation.features & ~F_PROTOCOL_FEATURES

    def config_bytes(self) -> bytes:
        return self.config.tag.encode().ljust(TAG_MAX, b"\0") + struct.pack("<I", self.config.num_queues)

    def activate(self, memory, queues, features, context) -> None:
        self.memory, self.context = memory, context
        try:
            table = MemoryTable.of(memory)
            rings = []
            for q in queues:
                if q is None:
                    continue
                if q.call_fd is None:
                    raise DeviceError(f"virtio-fs {self.config.tag}: queue {q.index} has no MSI-X vector")
                desc = table.user_address(q.desc, 16 * q.size)
                avail = table.user_address(q.avail, 6 + 2 * q.size)
                used = table.user_address(q.used, 6 + 8 * q.size)
                rings.append(VringConfig(q.index, q.size, desc, avail, used, q.kick_fd, q.call_fd))
            self.frontend.activate(features, table.regions, rings)
        except VhostUserError as e:
            raise DeviceError(f"virtio-fs {self.config.tag}: virtiofsd refused the device: {e}") from e
        self.table = table
        self.started = [r.index for r in rings]
        self.queues, self.features = [q for q in queues if q is not None], features
        context.watch(self.frontend.fileno(), self._socket_readable)
        log.info("virtio-fs started", tag=self.config.tag, socket=self.connection.socket, queues=self.started)

    def _socket_readable(self) -> None:
        """virtiofsd sends nothing unasked (no backend channel is set up): readable means
        it hung up, or broke the protocol. Either way the device is broken: it says so
        (DEVICE_NEEDS_RESET), cuts virtiofsd off and answers the queues itself
        (takeover.py), so that the guest's requests end and its driver can let go."""
        fd = self.frontend.fileno()
        with self.frontend.lock:          # a reply an API thread awaits (ADD_MEM_REG) is its own
            try:
                data = _peek(fd)
            except BlockingIOError:
                return                    # that reply, taken meanwhile, or woken for nothing
            except OSError:
                data = b""
        self.context.unwatch(fd)          # level-triggered: a dead socket would wake the thread forever
        why = "virtiofsd closed its socket" if not data else "virtiofsd sent a message nobody asked for"
        reason = f"virtio-fs {self.config.tag}: {why} ({self.connection.socket}); its requests now fail"
        try:
            _shutdown(fd)                 # a backend that broke the protocol is not trusted with the rings
        except OSError:
            pass
        self.context.report_needs_reset(reason)
        try:
            for q in self.queues:
                takeover = Takeover(self.memory, q, bool(self.features & VIRTIO_F_EVENT_IDX), self.context)
                self.takeovers.append(takeover)
                self.context.watch(q.kick_fd, _kicked(q.kick_fd, takeover))
        except VirtqueueError as e:
            raise DeviceError(f"virtio-fs {self.config.tag}: the guest's rings cannot be taken over: {e}") from e

    def memory_added(self, region) -> None:
        """plugvm_memory_added, on the API thread serving the resize: virtiofsd maps the
        new RAM before the guest hears of it. A backend that refuses is cut off (its
        socket shut down), so that the I/O thread marks the device broken."""
        if self.table is None:
            return                  # not started: activate() sends the whole table
        try:
            self.frontend.add_region(self.table.add(self.memory, region))
        except VhostUserError as e:
            log.error("virtiofsd did not take new guest RAM; the device breaks", tag=self.config.tag, error=str(e))
            try:
                _shutdown(self.frontend.fileno())
            except OSError:
                pass

    def reset(self) -> None:
        for takeover in self.takeovers:
            takeover.close()
        if self.started and not self.takeovers:
            self.frontend.deactivate(self.started)
        self.takeovers, self.queues = [], []
        self.started, self.table, self.memory, self.context = [], None, None, None

    @property
    def dead(self) -> bool:
        return bool(self.takeovers)

    def handover(self) -> Connection | None:
        if self.dead:
            return None             # the next boot connects afresh (to a restarted virtiofsd)
        self._handed_over = True
        return self.connection

    def close(self) -> None:
        if not self._handed_over:
            self.connection.close()


def _kicked(fd: int, takeover: Takeover):
    def handler() -> None:
        try:
            os.eventfd_read(fd)
        except BlockingIOError:
            return
        takeover.drain()
    return handler


def _peek(fd: int) -> bytes:
    s = socket.socket(fileno=fd)
    try:
        return s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
    finally:
        s.detach()          # the fd stays the frontend's


def _shutdown(fd: int) -> None:
    s = socket.socket(fileno=fd)
    try:
        s.shutdown(socket.SHUT_RDWR)
    finally:
        s.detach()
