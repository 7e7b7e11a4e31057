"""The virtio-pci transport (virtio 1.2 §4.1): owns a VirtioDevice and presents it
to the guest as a PCI function, with cloud-hypervisor's BAR0 layout (notes §3e).

BAR0 (512 KiB): common config 0x0, ISR 0x2000, device config 0x4000, notify 0x6000
(multiplier 4, one address per queue, each an ioeventfd), MSI-X table 0x8000,
PBA 0x48000. One MSI-X vector per queue plus one for config changes, each through
an irqfd. The device runs on its own I/O thread (io_thread.py); vCPU threads only
touch registers.
"""

from __future__ import annotations

import os
import threading

from plugvm.logs import get_logger
from plugvm.pci.config_space import PciConfigSpace
from plugvm.pci.msix import Msix
from plugvm.virtio import common_config as cc
from plugvm.virtio.device import (VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_VERSION_1, DeviceError,
                                  ExternalQueue, VirtioDevice)
from plugvm.virtio.io_thread import IoThread
from plugvm.virtio.queue import SplitQueue, VirtqueueError

log = get_logger(__name__)

VENDOR_ID = 0x1AF4
DEVICE_ID_BASE = 0x1040
SUBSYSTEM_ID = 0x40
BAR0_SIZE = 512 << 10
COMMON, ISR, DEVICE_CONFIG, NOTIFY, MSIX_TABLE, MSIX_PBA = 0x0, 0x2000, 0x4000, 0x6000, 0x8000, 0x48000
DEVICE_CONFIG_SIZE = 0x1000
NOTIFY_MULTIPLIER = 4
ISR_QUEUE, ISR_CONFIG = 1, 2
# virtio_pci_cap.cfg_type (§4.1.4)
CAP_COMMON, CAP_NOTIFY, CAP_ISR, CAP_DEVICE = 1, 2, 3, 4
PCI_CAP_ID_VENDOR = 0x09
# PCI class codes by virtio device type (class, subclass) as other VMMs present them.
CLASSES = {1: (0x02, 0x00), 2: (0x01, 0x80), 4: (0xFF, 0x00)}
OFFERED = VIRTIO_F_VERSION_1 | VIRTIO_F_EVENT_IDX | VIRTIO_F_INDIRECT_DESC


def virtio_cap(cfg_type: int, offset: int, length: int, extra: bytes = b"") -> bytes:
    """The body of a virtio_pci_cap after cap_vndr and cap_next: cap_len, cfg_type,
    bar 0, id 0, padding, offset, length (and notify_off_multiplier for notify)."""
    cap_len = 16 + len(extra)
    return bytes([cap_len, cfg_type, 0, 0, 0, 0]) + offset.to_bytes(4, "little") + length.to_bytes(4, "little") + extra


class VirtioPciDevice:
    """One virtio device on the PCI segment. The machine places BAR0 and calls
    attach(); the guest then drives everything through config space and BAR0."""

    def __init__(self, device: VirtioDevice, device_id: str, memory, vm, router, bar_addr: int, bar_64bit: bool):
        self.device = device
        self.id = device_id
        self.memory = memory
        self.vm = vm
        self.router = router
        self.bar_addr = bar_addr
        offered = device.device_features() | (0 if device.external_queues else OFFERED)
        self.common = cc.CommonConfig(offered, tuple(device.queue_sizes))
        num_queues = len(device.queue_sizes)
        self.isr = 0
        self.active = False
        self.broken = False
        self.closed = False
        # Set while the driver has the device running (DRIVER_OK accepted): what a
        # hotplug request with `Prefer: wait` waits for.
        self.driver_ok = threading.Event()
        self.queues: list[SplitQueue | None] = []
        self._watched: set[int] = set()
        # Serialises vCPU threads' register accesses. The I/O thread never takes it: a vCPU
        # holding it may be waiting in io.call() for that thread.
        self._lock = threading.RLock()
        klass, subclass = CLASSES.get(device.device_type, (0xFF, 0x00))
        self.config = PciConfigSpace(vendor_id=VENDOR_ID, device_id=DEVICE_ID_BASE + device.device_type,
                                     class_code=klass, subclass=subclass, revision=1,
                                     subsystem_vendor_id=VENDOR_ID, subsystem_id=SUBSYSTEM_ID)
        self.config.add_bar(0, BAR0_SIZE, is_64bit=bar_64bit, prefetchable=False, addr=bar_addr)
        self.vectors = [router.allocate() for _ in range(num_queues + 1)]
        self.msix = Msix(len(self.vectors), table_bar=0, table_offset=MSIX_TABLE, pba_bar=0, pba_offset=MSIX_PBA,
                         on_change=self._msix_changed, on_pending=self._raise_vector)
        self.msix.attach(self.config)
        for cfg_type, offset, length, extra in (
                (CAP_COMMON, COMMON, cc.SIZE, b""), (CAP_ISR, ISR, 1, b""),
                (CAP_DEVICE, DEVICE_CONFIG, DEVICE_CONFIG_SIZE, b""),
                (CAP_NOTIFY, NOTIFY, max(1, num_queues) * NOTIFY_MULTIPLIER,
                 NOTIFY_MULTIPLIER.to_bytes(4, "little"))):
            self.config.add_capability(PCI_CAP_ID_VENDOR, virtio_cap(cfg_type, offset, length, extra))
        self.notify_fds = [os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK) for _ in range(num_queues)]
        self.io = IoThread(f"virtio-{device_id}", self._device_failed)
        for index, fd in enumerate(self.notify_fds):
            vm.ioeventfd(fd, bar_addr + NOTIFY + index * NOTIFY_MULTIPLIER, 2, pio=False)
            if not device.external_queues:      # else the kicks are the backend's to read
                self.io.watch(fd, self._notified(index, fd))

    # --- BAR0, from vCPU threads -------------------------------------------------------------

    def read(self, offset: int, data: memoryview) -> None:
        size = len(data)
        with self._lock:
            if self.closed:             # a vCPU that found it on the bus just before an eject
                data[:] = b"\xff" * size
                return
            if COMMON <= offset < COMMON + cc.SIZE:
                value = self.common.read(offset - COMMON, size)
                if offset - COMMON == 0x14:       # device_status
                    value = self.common.status
            elif offset == ISR:
                value, self.isr = self.isr, 0      # reading ISR clears it (§4.1.4.5)
            elif DEVICE_CONFIG <= offset < DEVICE_CONFIG + DEVICE_CONFIG_SIZE:
                config = self.device.config_bytes()
                start = offset - DEVICE_CONFIG
                data[:] = config[start:start + size].ljust(size, b"\0")
                return
            elif MSIX_TABLE <= offset < MSIX_PBA:
                self.msix.table_read(offset - MSIX_TABLE, data)
                return
            elif MSIX_PBA <= offset < BAR0_SIZE:
                self.msix.pba_read(offset - MSIX_PBA, data)
                return
            else:
                value = 0
        data[:] = cc.pack(value, size)

    def write(self, offset: int, data: memoryview) -> None:
        size = len(data)
        with self._lock:
            if self.closed:
                return
            if COMMON <= offset < COMMON + cc.SIZE:
                value = cc.unpack(data)
                what = self.common.write(offset - COMMON, size, value)
                if what == "device_status":
                    self._set_status(value & 0xFF)
                elif what == "queue_enable":
                    self.common.selected.enabled = True
            elif DEVICE_CONFIG <= offset < DEVICE_CONFIG + DEVICE_CONFIG_SIZE:
                if self.active:
                    self.io.call(lambda: self.device.write_config(offset - DEVICE_CONFIG, bytes(data)))
            elif NOTIFY <= offset < NOTIFY + len(self.notify_fds) * NOTIFY_MULTIPLIER:
                # A notify the ioeventfd did not catch (another width): pass it on the same way.
                os.eventfd_write(self.notify_fds[(offset - NOTIFY) // NOTIFY_MULTIPLIER], 1)
            elif MSIX_TABLE <= offset < MSIX_PBA:
                self.msix.table_write(offset - MSIX_TABLE, data)

    # --- status ------------------------------------------------------------------------------

    def _set_status(self, status: int) -> None:
        common = self.common
        if status == 0:
            self._reset()
            return
        old = common.status
        if status & cc.FEATURES_OK and not old & cc.FEATURES_OK:
            if common.driver_features & ~common.device_features or not common.driver_features & VIRTIO_F_VERSION_1:
                status &= ~cc.FEATURES_OK     # refused: the driver sees the bit stay clear (§3.1.1)
        common.status = status | (old & cc.DEVICE_NEEDS_RESET)
        if status & cc.DRIVER_OK and not old & cc.DRIVER_OK and not self.broken:
            self._activate()

    def _activate(self) -> None:
        common = self.common
        event_idx = bool(common.driver_features & VIRTIO_F_EVENT_IDX)
        queues: list = []
        if self.device.external_queues:
            queues = [ExternalQueue(i, q.size, q.desc, q.driver, q.device, self.notify_fds[i],
                                    self.vectors[q.msix_vector].eventfd if q.msix_vector < len(self.vectors) else None)
                      if q.enabled else None for i, q in enumerate(common.queues)]
            self.queues = queues
            return self._start(queues)
        try:
            for q in common.queues:
                queues.append(SplitQueue(self.memory, q.size, q.desc, q.driver, q.device, event_idx)
                              if q.enabled else None)
        except VirtqueueError as e:
            for queue in queues:
                if queue is not None:
                    queue.close()
            self._needs_reset(e)
            return
        self.queues = queues
        self._start(queues)

    def _start(self, queues: list) -> None:
        features = self.common.driver_features
        try:
            self.io.call(lambda: self.device.activate(self.memory, queues, features, _Context(self)))
        except (DeviceError, VirtqueueError) as e:
            self._needs_reset(e)
            return
        self.active = True
        self.driver_ok.set()
        log.info("virtio device active", id=self.id, features=hex(features))

    def _reset(self) -> None:
        if self.active or self.broken:
            self.io.call(self._device_reset)
        self.active = False
        self.broken = False
        self.driver_ok.clear()
        self._close_queues()
        self.isr = 0
        self.common.reset()

    def _close_queues(self) -> None:
        for queue in self.queues:
            if isinstance(queue, SplitQueue):
                queue.close()
        self.queues = []

    def _device_reset(self) -> None:
        for fd in list(self._watched):
            self.io.unwatch(fd)
        self._watched.clear()
        self.device.reset()

    def _needs_reset(self, error: BaseException) -> None:
        """The guest broke the device: stop using it until the driver resets it (§2.1.2)."""
        log.warning("virtio device needs reset", id=self.id, error=str(error))
        self.broken = True
        self.active = False
        self.driver_ok.clear()
        self.common.status |= cc.DEVICE_NEEDS_RESET
        self.interrupt_config()

    def _device_failed(self, error: BaseException) -> None:
        if isinstance(error, (DeviceError, VirtqueueError, OSError)):
            self._needs_reset(error)
        else:
            log.error("virtio device failed", id=self.id, error=repr(error))
            self._needs_reset(error)

    # --- from the I/O thread -----------------------------------------------------------------

    def _notified(self, index: int, fd: int):
        def handler() -> None:
            try:
                os.eventfd_read(fd)
            except BlockingIOError:
                return
            if self.active:
                self.device.queue_notify(index)
        return handler

    def _interrupt(self, vector_index: int, isr_bit: int) -> None:
        self.isr |= isr_bit
        if self.msix.signal(vector_index):
            self.vectors[vector_index].signal()

    def interrupt_queue(self, index: int) -> None:
        q = self.common.queues[index]
        if q.msix_vector != cc.NO_VECTOR and q.msix_vector < len(self.vectors):
            self._interrupt(q.msix_vector, ISR_QUEUE)

    def interrupt_config(self) -> None:
        self.common.config_generation = (self.common.config_generation + 1) & 0xFF
        vector = self.common.config_msix_vector
        if vector != cc.NO_VECTOR and vector < len(self.vectors):
            self._interrupt(vector, ISR_CONFIG)

    # --- MSI-X ------------------------------------------------------------------------------

    def _msix_changed(self, index: int, entry) -> None:
        if self.closed:                 # the vectors are released
            return
        if entry is None:
            self.router.unroute(self.vectors[index])
        else:
            self.router.route(self.vectors[index], entry.address, entry.data)

    def _raise_vector(self, index: int) -> None:
        if not self.closed:
            self.vectors[index].signal()

    # --- BAR0 relocation ----------------------------------------------------------------------

    def move_bar(self, new_addr: int) -> None:
        """BAR0 now decodes at new_addr (the guest reprogrammed it; the caller moved the
        bus range): the queue notify addresses follow it, on the same eventfds, so the
        I/O thread sees nothing change."""
        with self._lock:
            if self.closed:
                return
            old_addr, self.bar_addr = self.bar_addr, new_addr
            for index, fd in enumerate(self.notify_fds):
                self.vm.ioeventfd(fd, old_addr + NOTIFY + index * NOTIFY_MULTIPLIER, 2, pio=False, deassign=True)
                self.vm.ioeventfd(fd, new_addr + NOTIFY + index * NOTIFY_MULTIPLIER, 2, pio=False)

    # --- teardown ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the device and release everything: the VM is ending or the device is removed.
        Safe against vCPUs still reaching the registers: they find it closed."""
        with self._lock:                # waits for a vCPU in the middle of an access
            if self.closed:
                return
            self.closed = True
        self.driver_ok.clear()
        try:
            if self.active or self.broken:
                self.io.call(self._device_reset)
        finally:
            self.io.stop()
            self._close_queues()
            for index, fd in enumerate(self.notify_fds):
                try:
                    self.vm.ioeventfd(fd, self.bar_addr + NOTIFY + index * NOTIFY_MULTIPLIER, 2, pio=False,
                                      deassign=True)
                except OSError:
                    pass
                os.close(fd)
            for vector in self.vectors:
                self.router.release(vector)
            self.device.close()


class _Context:
    """The DeviceContext an active device gets (device.py)."""

    def __init__(self, transport: VirtioPciDevice):
        self._t = transport

    def interrupt_queue(self, index: int) -> None:
        self._t.interrupt_queue(index)

    def interrupt_config(self) -> None:
        self._t.interrupt_config()

    def watch(self, fd, callback) -> None:
        t = self._t

        def guarded() -> None:
            if t.active:
                callback()
        t._watched.add(fd)
        t.io.watch(fd, guarded)

    def report_needs_reset(self, reason: str) -> None:
        t = self._t
        log.warning("virtio device needs reset; it goes on answering", id=t.id, reason=reason)
        t.common.status |= cc.DEVICE_NEEDS_RESET
        t.interrupt_config()

    def unwatch(self, fd) -> None:
        self._t._watched.discard(fd)
        self._t.io.unwatch(fd)
