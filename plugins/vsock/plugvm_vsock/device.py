"""The virtio-vsock device (virtio 1.2 §5.10) as cloud-hypervisor's hybrid vsock
(virtio-devices/src/vsock; notes §3g): device 19, queues rx 0, tx 1 and event 2 of 256
entries each, config space `le64 guest_cid`; the host side a unix socket.

This module moves chains between the queues and the engine (engine.py); the engine
owns the connections, the muxer (muxer.py) the host streams before they are ones.
Every host fd sits in the device's own epoll set (poller.py), watched as one fd.
"""

from __future__ import annotations

import struct

from plugvm.logs import get_logger
from plugvm.virtio.device import VirtioDevice

from plugvm_vsock.config import VsockConfig
from plugvm_vsock.engine import Engine
from plugvm_vsock.listener import Listener
from plugvm_vsock.muxer import Muxer
from plugvm_vsock.poller import Poller

log = get_logger(__name__)
DEVICE_TYPE = 19
RX, TX, EVENT = 0, 1, 2
QUEUE_SIZE = 256                # cloud-hypervisor's, for each of the three
F_STREAM = 1 << 0               # VIRTIO_VSOCK_F_STREAM (§5.10.3)
CONFIG = struct.Struct("<Q")    # struct virtio_vsock_config { le64 guest_cid; }
ROUNDS = 64                     # RX/TX rounds per wake-up before other fds get the thread


class VirtioVsock(VirtioDevice):
    device_type = DEVICE_TYPE
    queue_sizes = (QUEUE_SIZE,) * 3

    def __init__(self, config: VsockConfig, listener: Listener | None = None):
        """Binds the socket, unless the previous boot's device handed its listener over."""
        self.config = config
        if listener is not None and listener.path != config.socket:
            listener.close()
            listener = None
        self.listener = listener or Listener(config.socket)
        self._handed_over = False
        self.rx = self.tx = self.context = None
        self.poller: Poller | None = None
        self.engine: Engine | None = None
        self.muxer: Muxer | None = None
        self._rx_chain = None           # an RX chain popped when nothing was owed the guest

    def device_features(self) -> int:
        return F_STREAM

    def config_bytes(self) -> bytes:
        return CONFIG.pack(self.config.cid)

    def activate(self, memory, queues, features, context) -> None:
        self.rx, self.tx = (list(queues) + [None, None])[:2]
        self.context = context
        self.poller = Poller()
        self.engine = Engine(self.config.cid, str(self.config.socket), self.poller)
        self.muxer = Muxer(self.listener, self.poller, self.engine)
        context.watch(self.poller.fileno(), self._host_ready)
        log.info("vsock started", cid=self.config.cid, socket=str(self.config.socket))

    def queue_notify(self, index: int) -> None:
        # The event queue only ever holds buffers for a transport reset, which a hybrid
        # vsock never sends (no migration), so its kicks need nothing.
        if index in (RX, TX) and self.engine is not None:
            self.run()

    def _host_ready(self) -> None:
        self.poller.dispatch()
        self.run()

    def run(self) -> None:
        """Take what the guest sent and give it what it is owed, until neither moves (TX
        waits while the engine's backlog is full: the replies need RX buffers first)."""
        for _ in range(ROUNDS):
            sent = self._transmit()
            received = self._receive()
            if not (sent or received):
                break

    def _transmit(self) -> int:
        queue, engine, done = self.tx, self.engine, 0
        if queue is None:
            return 0
        while not engine.backlog_full() and done < 2 * queue.size:
            chain = queue.pop()
            if chain is None:
                break
            engine.from_guest(chain.readable)
            queue.push(chain.head, 0)
            done += 1
        if done and queue.needs_interrupt():
            self.context.interrupt_queue(TX)
        return done

    def _receive(self) -> int:
        queue, engine, done = self.rx, self.engine, 0
        if queue is None:
            return 0
        while engine.has_rx_work() and done < 2 * queue.size:
            chain = self._rx_chain or queue.pop()
            self._rx_chain = None
            if chain is None:
                break
            written = engine.to_guest(chain.writable)
            if written is None:
                self._rx_chain = chain      # the work went away (host had nothing after all)
                break
            queue.push(chain.head, written)
            done += 1
        if done and queue.needs_interrupt():
            self.context.interrupt_queue(RX)
        return done

    def reset(self) -> None:
        """Every connection ends with the driver (the guest's sockets are gone); the
        listener stays bound for the next driver."""
        if self.context is not None and self.poller is not None:
            self.context.unwatch(self.poller.fileno())
        if self.engine is not None:
            self.muxer.close()
            self.engine.close()
            self.poller.close()
        self.engine = self.muxer = self.poller = None
        self.rx = self.tx = self.context = None
        self._rx_chain = None

    def handover(self) -> Listener:
        """A guest reboot keeps the socket bound: the next boot's device takes it."""
        self._handed_over = True
        return self.listener

    def close(self) -> None:
        if self.engine is not None:
            self.reset()
        if not self._handed_over:
            self.listener.close()
