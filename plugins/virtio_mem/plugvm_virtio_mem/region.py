"""The virtio-mem region of one boot: its blocks, the size the host asks for, and the
rules of the guest's requests (virtio 1.2 §5.15.6; ch's virtio-devices/src/mem.rs).

It is shared by two threads, so everything here runs under one lock: the device's I/O
thread runs the guest's requests (VirtioMem.queue_notify → execute()), and an API thread
resizes (VirtioMemHotplug.resize → ask()). Block state outlives a device reset, as the
spec keeps plugged memory over one (Linux's driver sends UNPLUG_ALL when it probes a
device with plugged_size != 0).
"""

from __future__ import annotations

import threading

from plugvm.logs import get_logger
from plugvm_virtio_mem.blocks import BLOCK_SIZE, PLUGGED, UNPLUGGED, Blocks
from plugvm_virtio_mem.requests import (ACK, CONFIG, ERROR, NACK, PLUG, STATE, UNPLUG, UNPLUG_ALL,
                                        Request)

log = get_logger(__name__)


class VirtioMemRegion:
    """[addr, +size) of guest RAM, mapped for the whole boot, of which the guest uses
    the plugged blocks. `requested_size` is what the host wants plugged."""

    def __init__(self, memory, addr: int, size: int, requested_size: int = 0):
        self.memory = memory                # plugvm.memory.GuestMemory: discard() gives blocks back
        self.blocks = Blocks(addr, size, BLOCK_SIZE)
        self.requested_size = requested_size
        self.lock = threading.Lock()
        self._context = None                # the active device's DeviceContext, for config changes
        self._waiting: list[threading.Event] = []

    @property
    def addr(self) -> int:
        return self.blocks.addr

    @property
    def size(self) -> int:
        return self.blocks.size

    @property
    def plugged_size(self) -> int:
        return self.blocks.plugged_size

    def config_bytes(self) -> bytes:
        """struct virtio_mem_config; node 0, and all of the region usable."""
        with self.lock:
            return CONFIG.pack(BLOCK_SIZE, 0, self.addr, self.size, self.size, self.plugged_size,
                               self.requested_size)

    def connect(self, context) -> None:
        """The driver started the device (activate): config changes go to `context`."""
        with self.lock:
            self._context = context

    def disconnect(self) -> None:
        """The driver reset the device: no config interrupts until it starts it again."""
        with self.lock:
            self._context = None

    def ask(self, requested_size: int) -> threading.Event:
        """The host wants `requested_size` bytes plugged (a multiple of the block size,
        within the region: the caller checked). Tells an active driver through a config
        change; returns an event set once plugged_size reaches it."""
        done = threading.Event()
        with self.lock:
            changed = requested_size != self.requested_size
            self.requested_size = requested_size
            self._waiting.append(done)
            self._settle()
            if changed and self._context is not None:
                self._context.interrupt_config()
        return done

    def execute(self, request: Request) -> tuple[int, int]:
        """The guest's request: (response type, state). Never raises."""
        with self.lock:
            try:
                return self._execute(request)
            finally:
                self._settle()

    def _execute(self, request: Request) -> tuple[int, int]:
        blocks = self.blocks
        if request.type == UNPLUG_ALL:
            if not self._discard(blocks.addr, blocks.size):
                return ERROR, 0
            blocks.clear()
            return ACK, 0
        if request.type not in (PLUG, UNPLUG, STATE):
            return ERROR, 0
        span = blocks.range(request.addr, request.nb_blocks)
        if span is None:
            return ERROR, 0
        state = blocks.state(*span)
        if request.type == STATE:
            return ACK, state
        first, count = span
        if request.type == PLUG:
            if state != UNPLUGGED:
                return ERROR, 0
            if blocks.plugged_size + count * BLOCK_SIZE > self.requested_size:
                return NACK, 0
            blocks.mark(first, count, plugged=True)
            return ACK, 0
        if state != PLUGGED:
            return ERROR, 0
        if not self._discard(blocks.address(first), count * BLOCK_SIZE):
            return ERROR, 0
        blocks.mark(first, count, plugged=False)
        return ACK, 0

    def _discard(self, addr: int, size: int) -> bool:
        # The range is inside the region (Blocks.range), which is one GuestMemory region.
        try:
            self.memory.discard(addr, size)
            return True
        except (OSError, ValueError) as e:      # GuestMemoryError is a ValueError
            # A backing madvise refuses (hugetlbfs on an old host): the blocks stay plugged.
            log.warning("virtio-mem cannot give blocks back to the host", addr=hex(addr), size=size, error=str(e))
            return False

    def _settle(self) -> None:
        # Every waiter is released once the guest has what was asked last: an earlier
        # resize that a later one replaced is done when the later one is.
        if self._waiting and self.blocks.plugged_size == self.requested_size:
            for event in self._waiting:
                event.set()
            self._waiting.clear()
