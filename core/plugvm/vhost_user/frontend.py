"""The vhost-user frontend: plugvm's side of the control channel to a backend process
(virtiofsd, a vhost-user-blk or -net daemon) that serves a device's virtqueues itself.

Device-neutral: a device plugin says which virtio features it acks, which queues exist
and where their rings are; this speaks the protocol. A device calls, in order:
  Frontend.connect(path, timeout)     when it is created (boot or hotplug)
  negotiate(...)                      at once; its features bound what the device offers
  activate(features, regions, queues) when the guest sets DRIVER_OK
  add_region(region)                  from plugvm_memory_added, while active or not
  deactivate(indices)                 on device reset, before a later activate
  close()                             on unplug or VM teardown
and may watch fileno() for EOF (the backend died). Sequences follow cloud-hypervisor's
(virtio-devices/src/vhost_user/vu_common_ctrl.rs) and the spec's ring states.
"""

from __future__ import annotations

from dataclasses import dataclass

from plugvm.logs import get_logger
from plugvm.vhost_user import protocol
from plugvm.vhost_user.connection import Connection, connect_socket
from plugvm.vhost_user.errors import BackendGone, BackendLimitError, BackendNack, ReplyError
from plugvm.vhost_user.memory_table import SharedRegion
from plugvm.vhost_user.protocol import F_PROTOCOL_FEATURES, ProtocolFeature, Request

log = get_logger(__name__)

# What this frontend implements of the protocol extensions; a backend's offer is cut to it.
SUPPORTED_PROTOCOL_FEATURES = (ProtocolFeature.MQ.mask | ProtocolFeature.REPLY_ACK.mask
                               | ProtocolFeature.CONFIGURE_MEM_SLOTS.mask)
DEFAULT_REPLY_TIMEOUT = 5.0


@dataclass(frozen=True)
class Negotiation:
    """What negotiate() learnt: the backend's virtio features (bit 30 included when it
    offers protocol features), the protocol features it offered and those now in force,
    and with MQ / CONFIGURE_MEM_SLOTS its queue and memory-slot limits (else None)."""

    features: int
    offered_protocol_features: int
    protocol_features: int
    queue_num: int | None
    max_mem_slots: int | None


@dataclass(frozen=True)
class VringConfig:
    """One queue to start: its size, its rings' user addresses (MemoryTable.user_address
    of the guest's ring addresses), the eventfds the guest's notifications arrive on
    (kick) and the backend signals used buffers on (call; typically an irqfd), and the
    avail index to start from. The fds stay the caller's."""

    index: int
    size: int
    desc_user: int
    avail_user: int
    used_user: int
    kick_fd: int
    call_fd: int
    base: int = 0


class Frontend:
    """A connection to one vhost-user backend, and the messages and sequences over it.
    Every exchange holds one lock, so threads may share a Frontend."""

    def __init__(self, connection: Connection):
        self._conn = connection
        # Protocol features in force once SET_PROTOCOL_FEATURES went out. "negotiated" is
        # separate: with nothing in common (0) the backend still starts rings disabled.
        self.protocol_features = 0
        self.protocol_negotiated = False
        self.max_mem_slots: int | None = None
        self.table: list[SharedRegion] = []     # the regions the backend has been told of

    @classmethod
    def connect(cls, path: str, timeout: float, interval: float = 0.1,
                reply_timeout: float = DEFAULT_REPLY_TIMEOUT) -> Frontend:
        """Connect to the backend listening at `path` (retrying, see connect_socket)."""
        return cls(Connection(connect_socket(str(path), timeout, interval), str(path), reply_timeout))

    def fileno(self) -> int:
        return self._conn.fileno()

    @property
    def lock(self):
        """Held for every exchange. A device watching fileno() for EOF takes it before it
        looks, so that a reply another thread is waiting for is not taken for a message
        the backend sent unasked."""
        return self._conn.lock

    def close(self) -> None:
        """Close the socket; a backend such as virtiofsd then exits. Idempotent."""
        self._conn.close()

    def has(self, feature: ProtocolFeature) -> bool:
        return bool(self.protocol_features & feature.mask)

    # -- one exchange --------------------------------------------------------------------

    def _get(self, request: Request, payload: bytes = b"", size: int | None = 8) -> bytes:
        """A request the backend always answers: its reply's payload."""
        with self._conn.lock:
            self._conn.send(request, 0, payload)
            return self._conn.receive_reply(request, size)

    def _set(self, request: Request, payload: bytes = b"", fds: list[int] = ()) -> None:
        """A request without a reply; with REPLY_ACK negotiated it asks for an ack and
        raises BackendNack on a non-zero one (the spec's "REPLY_ACK" section)."""
        with self._conn.lock:
            ack = self.has(ProtocolFeature.REPLY_ACK)
            self._conn.send(request, protocol.FLAG_NEED_REPLY if ack else 0, payload, fds)
            if ack:
                status = protocol.unpack_u64(self._conn.receive_reply(request, 8))
                if status:
                    raise BackendNack(f"vhost-user backend at {self._conn.name} refused {request.name} "
                                      f"(status {status:#x})", request.name, status)

    # -- the messages ----------------------------------------------------------------------

    def set_owner(self) -> None:
        self._set(Request.SET_OWNER)

    def reset_owner(self) -> None:
        self._set(Request.RESET_OWNER)

    def get_features(self) -> int:
        return protocol.unpack_u64(self._get(Request.GET_FEATURES))

    def set_features(self, features: int) -> None:
        self._set(Request.SET_FEATURES, protocol.pack_u64(features))

    def get_protocol_features(self) -> int:
        return protocol.unpack_u64(self._get(Request.GET_PROTOCOL_FEATURES))

    def set_protocol_features(self, features: int) -> None:
        # Sent without NEED_REPLY: REPLY_ACK is not in force until this message is taken.
        with self._conn.lock:
            self._conn.send(Request.SET_PROTOCOL_FEATURES, 0, protocol.pack_u64(features))
            self.protocol_features = features
            self.protocol_negotiated = True

    def get_queue_num(self) -> int:
        return protocol.unpack_u64(self._get(Request.GET_QUEUE_NUM))

    def get_max_mem_slots(self) -> int:
        return protocol.unpack_u64(self._get(Request.GET_MAX_MEM_SLOTS))

    def set_mem_table(self, regions: list[SharedRegion]) -> None:
        """Replace the backend's whole table (at most 8 regions), one fd per region."""
        self._set(Request.SET_MEM_TABLE, protocol.pack_memory_table([r.wire for r in regions]),
                  [r.fd for r in regions])

    def add_mem_reg(self, region: SharedRegion) -> None:
        self._set(Request.ADD_MEM_REG, protocol.pack_single_region(region.wire), [region.fd])

    def rem_mem_reg(self, region: SharedRegion) -> None:
        self._set(Request.REM_MEM_REG, protocol.pack_single_region(region.wire))    # no fd (the spec: SHOULD NOT)

    def set_vring_num(self, index: int, size: int) -> None:
        self._set(Request.SET_VRING_NUM, protocol.pack_vring_state(index, size))

    def set_vring_addr(self, address: protocol.VringAddress) -> None:
        self._set(Request.SET_VRING_ADDR, protocol.pack_vring_address(address))

    def set_vring_base(self, index: int, base: int) -> None:
        self._set(Request.SET_VRING_BASE, protocol.pack_vring_state(index, base))

    def get_vring_base(self, index: int) -> int:
        """Stops the ring (the spec's ring states) and returns its next avail index."""
        reply_index, base = protocol.unpack_vring_state(self._get(Request.GET_VRING_BASE,
                                                                  protocol.pack_vring_state(index, 0)))
        if reply_index != index:
            raise ReplyError(f"vhost-user backend at {self._conn.name} answered GET_VRING_BASE of queue "
                             f"{index} for queue {reply_index}", Request.GET_VRING_BASE.name)   # in step: kept open
        return base

    def _set_vring_fd(self, request: Request, index: int, fd: int | None) -> None:
        has_fd = fd is not None and fd >= 0
        self._set(request, protocol.pack_vring_fd(index, has_fd), [fd] if has_fd else [])

    def set_vring_kick(self, index: int, fd: int | None) -> None:
        self._set_vring_fd(Request.SET_VRING_KICK, index, fd)

    def set_vring_call(self, index: int, fd: int | None) -> None:
        self._set_vring_fd(Request.SET_VRING_CALL, index, fd)

    def set_vring_err(self, index: int, fd: int | None) -> None:
        self._set_vring_fd(Request.SET_VRING_ERR, index, fd)

    def set_vring_enable(self, index: int, enable: bool) -> None:
        self._set(Request.SET_VRING_ENABLE, protocol.pack_vring_state(index, int(enable)))

    def get_config(self, offset: int, size: int, flags: int = 0) -> bytes:
        """Needs ProtocolFeature.CONFIG (pass it to negotiate); a backend's empty reply
        is its refusal (BackendNack)."""
        request = protocol.pack_config(offset, size, flags)
        reply = self._get(Request.GET_CONFIG, request, size=None)
        if len(reply) != len(request):
            raise BackendNack(f"vhost-user backend at {self._conn.name} refused GET_CONFIG of "
                              f"{size} bytes at {offset}", Request.GET_CONFIG.name)
        return protocol.unpack_config(reply)[2]

    def set_config(self, offset: int, data: bytes, flags: int = 0) -> None:
        self._set(Request.SET_CONFIG, protocol.pack_config(offset, len(data), flags, data))

    # -- the sequences ---------------------------------------------------------------------

    def negotiate(self, protocol_features: int = SUPPORTED_PROTOCOL_FEATURES,
                  queues: int | None = None) -> Negotiation:
        """The connect-time sequence: SET_OWNER, GET_FEATURES and, when the backend offers
        protocol features, GET/SET_PROTOCOL_FEATURES with the intersection, then
        GET_QUEUE_NUM (MQ) and GET_MAX_MEM_SLOTS (CONFIGURE_MEM_SLOTS). With MQ,
        BackendLimitError if the backend has fewer than `queues` queues."""
        with self._conn.lock:
            self.set_owner()
            features = self.get_features()
            offered = in_force = 0
            queue_num = None
            if features & F_PROTOCOL_FEATURES:
                offered = self.get_protocol_features()
                in_force = offered & protocol_features
                self.set_protocol_features(in_force)
                if self.has(ProtocolFeature.MQ):
                    queue_num = self.get_queue_num()
                if self.has(ProtocolFeature.CONFIGURE_MEM_SLOTS):
                    self.max_mem_slots = self.get_max_mem_slots()
        log.info("vhost-user negotiated", socket=self._conn.name, features=hex(features),
                 protocol=protocol.protocol_feature_names(in_force), queue_num=queue_num)
        if queues is not None and queue_num is not None and queues > queue_num:
            raise BackendLimitError(f"vhost-user backend at {self._conn.name} has {queue_num} queues, "
                                    f"the device needs {queues}")
        return Negotiation(features, offered, in_force, queue_num, self.max_mem_slots)

    def set_memory(self, regions: list[SharedRegion]) -> None:
        """Tell the backend of exactly `regions`: one SET_MEM_TABLE of the first 8, and
        ADD_MEM_REG for any beyond (BackendLimitError without CONFIGURE_MEM_SLOTS)."""
        first, rest = regions[:protocol.MAX_REGIONS], regions[protocol.MAX_REGIONS:]
        if rest and not self._slots_for(len(regions)):
            raise BackendLimitError(f"vhost-user backend at {self._conn.name} can map {self._capacity()} "
                                    f"memory regions, guest RAM has {len(regions)}")
        with self._conn.lock:
            self.set_mem_table(first)
            self.table = list(first)
            for region in rest:
                self.add_mem_reg(region)
                self.table.append(region)

    def _capacity(self) -> int:
        return self.max_mem_slots if self.has(ProtocolFeature.CONFIGURE_MEM_SLOTS) else protocol.MAX_REGIONS

    def _slots_for(self, count: int) -> bool:
        return self.has(ProtocolFeature.CONFIGURE_MEM_SLOTS) and count <= (self.max_mem_slots or 0)

    def activate(self, features: int, regions: list[SharedRegion], queues: list[VringConfig]) -> None:
        """Start the device: SET_FEATURES (the guest's acked `features`, plus bit 30 when
        protocol features were negotiated), the memory table, per queue SET_VRING_NUM,
        _ADDR, _BASE, _CALL, _KICK, then SET_VRING_ENABLE(1) per queue. Without protocol
        features there is no ENABLE: such rings start on their first kick."""
        with self._conn.lock:
            protocol_on = self.protocol_negotiated
            self.set_features(features | (F_PROTOCOL_FEATURES if protocol_on else 0))
            self.set_memory(regions)
            for q in queues:
                self.set_vring_num(q.index, q.size)
                self.set_vring_addr(protocol.VringAddress(q.index, q.desc_user, q.used_user, q.avail_user))
                self.set_vring_base(q.index, q.base)
                self.set_vring_call(q.index, q.call_fd)
                self.set_vring_kick(q.index, q.kick_fd)
            if protocol_on:
                for q in queues:
                    self.set_vring_enable(q.index, True)

    def deactivate(self, indices: list[int]) -> dict[int, int]:
        """Stop queues on device reset: SET_VRING_ENABLE(0) (with protocol features) and
        GET_VRING_BASE each. Returns {index: next avail index} for the queues stopped
        before the backend went; a dead backend is no error here (it is stopped)."""
        bases: dict[int, int] = {}
        with self._conn.lock:
            try:
                for index in indices:
                    if self.protocol_negotiated:
                        self.set_vring_enable(index, False)
                    bases[index] = self.get_vring_base(index)
            except BackendGone as e:
                log.warning("vhost-user backend gone while stopping queues", socket=self._conn.name, error=str(e))
        return bases

    def add_region(self, region: SharedRegion) -> None:
        """Tell the backend of RAM added at run time (plugvm_memory_added): ADD_MEM_REG when
        CONFIGURE_MEM_SLOTS is in force and a slot is free, else a whole new SET_MEM_TABLE
        of the current table and `region` (BackendLimitError past 8 regions)."""
        with self._conn.lock:
            count = len(self.table) + 1
            if self._slots_for(count):
                self.add_mem_reg(region)
            elif count <= protocol.MAX_REGIONS:
                self.set_mem_table(self.table + [region])
            else:
                raise BackendLimitError(f"vhost-user backend at {self._conn.name} can map {self._capacity()} "
                                        f"memory regions, guest RAM now has {count}")
            self.table.append(region)
