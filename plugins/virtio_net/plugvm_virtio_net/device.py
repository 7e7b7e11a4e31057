"""The virtio-net device (virtio 1.2 §5.1) over a host tap: one RX/TX queue pair, frames
moved with readv/writev straight between the tap and the guest's buffers. The tap
carries the same 12-byte virtio_net_hdr_v1 the guest uses (IFF_VNET_HDR), so checksum
and segmentation offloads pass through untouched."""

from __future__ import annotations

import errno
import os
import struct

from plugvm.logs import get_logger
from plugvm.virtio.device import DeviceError, VirtioDevice

from plugvm_virtio_net.config import NetConfig
from plugvm_virtio_net.tap import (TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN, TUN_F_UFO, VNET_HDR_SIZE, Tap,
                                   TapError)

log = get_logger(__name__)

# Feature bits (virtio 1.2 §5.1.3).
F_CSUM = 1 << 0
F_GUEST_CSUM = 1 << 1
F_MTU = 1 << 3
F_MAC = 1 << 5
F_GUEST_TSO4 = 1 << 7
F_GUEST_TSO6 = 1 << 8
F_GUEST_ECN = 1 << 9
F_GUEST_UFO = 1 << 10
F_HOST_TSO4 = 1 << 11
F_HOST_TSO6 = 1 << 12
F_HOST_ECN = 1 << 13
F_HOST_UFO = 1 << 14
F_STATUS = 1 << 16
S_LINK_UP = 1
RX, TX = 0, 1
IOV_MAX = 1024                    # readv/writev refuse more buffers (EINVAL)
MAX_FRAME = 65536 + VNET_HDR_SIZE  # the largest frame a tap hands out (64 KiB GSO frame + header)
CONFIG = struct.Struct("<6sHHH")  # struct virtio_net_config: mac, status, max_virtqueue_pairs, mtu
NUM_BUFFERS = struct.Struct("<H")
NUM_BUFFERS_AT = 10               # offset of num_buffers in virtio_net_hdr_v1
# What each negotiated guest (RX) feature lets the tap hand us (if_tun.h TUN_F_*).
TUN_OFFLOADS = ((F_GUEST_CSUM, TUN_F_CSUM), (F_GUEST_TSO4, TUN_F_TSO4), (F_GUEST_TSO6, TUN_F_TSO6),
                (F_GUEST_ECN, TUN_F_TSO_ECN), (F_GUEST_UFO, TUN_F_UFO))


def offered_features(config: NetConfig) -> int:
    """The feature bits for a config; as in cloud-hypervisor, TSO and UFO ride on checksum
    offload (the spec makes the GSO features depend on CSUM / GUEST_CSUM, §5.1.3.1)."""
    features = F_MAC | F_STATUS | (F_MTU if config.mtu is not None else 0)
    if config.offload_csum:
        features |= F_CSUM | F_GUEST_CSUM
        if config.offload_tso:
            features |= F_GUEST_TSO4 | F_GUEST_TSO6 | F_GUEST_ECN | F_HOST_TSO4 | F_HOST_TSO6 | F_HOST_ECN
        if config.offload_ufo:
            features |= F_GUEST_UFO | F_HOST_UFO
    return features


def tun_offloads(features: int) -> int:
    """The TUNSETOFFLOAD flags for the negotiated features."""
    return sum(flag for feature, flag in TUN_OFFLOADS if features & feature)


def write_at(views: list[memoryview], offset: int, data: bytes) -> None:
    """Write data at `offset` into the concatenation of views (it may straddle them)."""
    for view in views:
        if offset >= len(view):
            offset -= len(view)
            continue
        chunk = data[:len(view) - offset]
        view[offset:offset + len(chunk)] = chunk
        data, offset = data[len(chunk):], 0
        if not data:
            return


class VirtioNet(VirtioDevice):
    """virtio-net on a tap: queue 0 receives (tap → guest), queue 1 transmits."""

    device_type = 1

    def __init__(self, config: NetConfig, option: str = "--net"):
        self.config = config
        if config.fds and len(config.fds) != 1:
            raise TapError(f"{option}: {len(config.fds)} tap fds for one RX/TX queue pair (multiqueue is not "
                           f"supported yet): send one")
        self.tap = Tap(config.tap, option, config.fds[0] if config.fds else None)
        try:
            # A tap that was sent is set up by its owner (Kata): as cloud-hypervisor's
            # from_tap_fds, plugvm leaves its address alone (ip and mask: the client's
            # defaults, 192.168.249.1, would replace the owner's).
            ip, mask = (None, None) if config.fds else (config.ip, config.mask)
            self.tap.configure(ip, mask, config.host_mac, config.mtu)
        except TapError:
            self.tap.close()
            raise
        self.queue_sizes = (config.queue_size, config.queue_size)
        self.counters = {"rx_bytes": 0, "rx_frames": 0, "tx_bytes": 0, "tx_frames": 0}
        self._bounce = bytearray(MAX_FRAME)     # for chains with more than IOV_MAX buffers
        self.rx = self.tx = self.context = None
        self._pending = None          # an RX chain popped while the tap had nothing to read
        self._watching = False
        log.info("tap opened", tap=self.tap.name, mac=config.mac)

    @property
    def tap_name(self) -> str:
        return self.tap.name

    def device_features(self) -> int:
        return offered_features(self.config)

    def config_bytes(self) -> bytes:
        return CONFIG.pack(self.config.mac_bytes, S_LINK_UP, 1, self.config.mtu or 0)

    def activate(self, memory, queues, features, context) -> None:
        self.rx, self.tx = (list(queues) + [None, None])[:2]
        self.context = context
        try:
            self.tap.set_offload(tun_offloads(features))
        except TapError as e:
            # Without offloads the tap hands out plain frames, which every guest accepts.
            log.warning("tap offloads not set", tap=self.tap.name, error=str(e))
        if self.rx is not None:
            self._watch()

    def queue_notify(self, index: int) -> None:
        if index == RX and self.rx is not None:
            self._watch()             # the guest added buffers: listen to the tap again
            self._receive()
        elif index == TX and self.tx is not None:
            self._transmit()

    # --- TX: guest → tap -------------------------------------------------------------------

    def _transmit(self) -> None:
        queue, fd = self.tx, self.tap.fd
        while (chain := queue.pop()) is not None:
            frame = chain.readable
            size = chain.readable_len
            if size > VNET_HDR_SIZE:
                try:
                    os.writev(fd, frame) if len(frame) <= IOV_MAX else os.write(fd, b"".join(frame))
                    self.counters["tx_frames"] += 1
                    self.counters["tx_bytes"] += size - VNET_HDR_SIZE
                except OSError as e:
                    # A full tap queue or a header the kernel refuses loses this one frame,
                    # as a real NIC would; the guest's stack retransmits.
                    log.debug("tx frame dropped", tap=self.tap.name, error=e.strerror, size=size)
            queue.push(chain.head, 0)
        if queue.needs_interrupt():
            self.context.interrupt_queue(TX)

    # --- RX: tap → guest -------------------------------------------------------------------

    def _watch(self) -> None:
        if not self._watching:
            self.context.watch(self.tap.fd, self._receive)
            self._watching = True

    def _unwatch(self) -> None:
        if self._watching:
            self.context.unwatch(self.tap.fd)
            self._watching = False

    def _receive(self) -> None:
        """Fill RX chains with frames until the tap or the queue runs dry. With no chains
        left, stop watching the tap (it stays readable, so the loop would spin) until
        the guest kicks queue 0."""
        queue = self.rx
        if queue is None:
            return
        for _ in range(2 * queue.size):       # then yield to TX; the tap is still readable
            chain = self._pending or queue.pop()
            self._pending = None
            if chain is None:
                self._unwatch()
                break
            if chain.writable_len < VNET_HDR_SIZE:
                queue.push(chain.head, 0)     # no room for even the header (§5.1.6.3)
                continue
            try:
                n = self._read(chain.writable)
            except BlockingIOError:
                self._pending = chain
                break
            except OSError as e:
                self._pending = chain
                if e.errno in (errno.EINVAL, errno.EFAULT):
                    raise DeviceError(f"--net: RX buffers refused by the tap: {e.strerror}") from e
                # Stop listening (the fd stays readable); the guest's next kick retries.
                log.warning("tap read failed", tap=self.tap.name, error=e.strerror)
                self._unwatch()
                break
            # Without MRG_RXBUF the device still sets num_buffers to 1 (§5.1.6.3.1); the tap
            # writes only the 10 bytes of the legacy header and skips the rest.
            write_at(chain.writable, NUM_BUFFERS_AT, NUM_BUFFERS.pack(1))
            queue.push(chain.head, n)
            self.counters["rx_frames"] += 1
            self.counters["rx_bytes"] += n - VNET_HDR_SIZE
        if queue.needs_interrupt():
            self.context.interrupt_queue(RX)

    def _read(self, views: list[memoryview]) -> int:
        """One frame into views; a frame longer than them is truncated, as tun does."""
        if len(views) <= IOV_MAX:
            return os.readv(self.tap.fd, views)
        n = os.readv(self.tap.fd, [self._bounce])
        done, data = 0, memoryview(self._bounce)[:n]
        for view in views:
            chunk = data[done:done + len(view)]
            view[:len(chunk)] = chunk
            done += len(chunk)
            if done == n:
                break
        return done

    def reset(self) -> None:
        if self.context is not None:
            self._unwatch()
        self._watching = False
        self._pending = None
        self.rx = self.tx = self.context = None

    def close(self) -> None:
        self.tap.close()
