"""The interface a virtio device implements; the PCI transport (pci_transport.py) owns it.

A device never touches PCI, MSI-X or eventfds. The transport negotiates features,
builds the queues when the driver sets DRIVER_OK, then calls the device from the
device's own I/O thread: queue_notify() when the guest kicks a queue, and the
callback of any host fd the device asked to watch. The device answers through
the DeviceContext (interrupts, fd watches) and, when the
guest broke the protocol, by raising DeviceError (or VirtqueueError): the
transport then sets DEVICE_NEEDS_RESET and stops calling the device until the
driver resets it. Nothing a guest does may raise anything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from plugvm.errors import PlugvmError

# Feature bits the transport offers for every device (virtio 1.2 §6).
VIRTIO_F_INDIRECT_DESC = 1 << 28
VIRTIO_F_EVENT_IDX = 1 << 29
VIRTIO_F_VERSION_1 = 1 << 32
VIRTIO_F_ACCESS_PLATFORM = 1 << 33


class DeviceError(PlugvmError, RuntimeError):
    """The guest used the device wrongly; the transport sets DEVICE_NEEDS_RESET."""


class DeviceContext(Protocol):
    """What the transport gives an active device (its methods are called on the I/O thread)."""

    def interrupt_queue(self, index: int) -> None:
        """Tell the driver that queue `index` has used buffers. The caller checked the
        queue's suppression first (SplitQueue.needs_interrupt())."""

    def interrupt_config(self) -> None:
        """Tell the driver that the device's config space changed."""

    def watch(self, fd: int, callback: Callable[[], None]) -> None:
        """Call `callback` on the I/O thread whenever `fd` is readable (e.g. a tap's RX),
        until unwatch(fd) or the device is reset."""

    def unwatch(self, fd: int) -> None:
        """Stop watching `fd` (e.g. while the RX queue has no buffers)."""

    def report_needs_reset(self, reason: str) -> None:
        """Set DEVICE_NEEDS_RESET and tell the driver (a config interrupt), but keep the
        device running: for one whose backend failed and that goes on answering the
        driver with errors, so that the driver can unbind cleanly. (Raising DeviceError
        instead stops the device at once.)"""


@dataclass(frozen=True)
class ExternalQueue:
    """A queue another process serves (a vhost-user backend), as an external_queues
    device gets it at activate(): its guest-physical ring addresses, the eventfd the
    guest's notifies land on (an ioeventfd: the backend's kick) and the eventfd that
    raises the queue's MSI-X vector (an irqfd: the backend's call; None when the driver
    gave the queue no vector)."""

    index: int
    size: int
    desc: int
    avail: int
    used: int
    kick_fd: int
    call_fd: int | None


class VirtioDevice:
    """Base class for a virtio device. Subclasses set device_type and queue_sizes
    and override what they need; defaults describe a device with no config space."""

    device_type: int = 0                 # virtio device id: 1 net, 2 block, 4 entropy, ...
    queue_sizes: tuple[int, ...] = ()    # the maximum size of each queue (powers of two)
    # The queues are served by another process (vhost-user), not by queue_notify():
    # activate() gets ExternalQueue objects instead of SplitQueues, the transport never
    # reads the kick eventfds, and it offers exactly device_features() (the backend's,
    # VERSION_1 included), adding nothing of its own.
    external_queues: bool = False

    def device_features(self) -> int:
        """Device-specific feature bits (the transport adds VERSION_1, EVENT_IDX and
        INDIRECT_DESC itself, unless external_queues)."""
        return 0

    def config_bytes(self) -> bytes:
        """The current device config space (the transport serves reads from it)."""
        return b""

    def write_config(self, offset: int, data: bytes) -> None:
        """The driver wrote the config space; most devices ignore it."""

    def activate(self, memory, queues: list, features: int, context: DeviceContext) -> None:
        """The driver set DRIVER_OK. `queues` holds a virtio.queue.SplitQueue per queue the
        driver enabled (an ExternalQueue for an external_queues device; None for one it
        did not), `features` the negotiated bits.
        Called on the device's I/O thread; the device may keep all four."""

    def queue_notify(self, index: int) -> None:
        """The guest kicked queue `index`: process what it made available. Called on the
        device's I/O thread, never concurrently with itself or a watch callback."""

    def reset(self) -> None:
        """The driver reset the device: forget the queues and the negotiated features.
        Called on the I/O thread after it stopped calling queue_notify."""

    def handover(self) -> object | None:
        """The guest reboots: what the next boot's device with the same id should get as
        DeviceEnv.handover (an open backend connection that must outlive the boot, such
        as a vhost-user socket whose backend exits when it closes), or None. Called by
        the core on the thread tearing the boot down, before the device is reset and
        closed; close() must then leave what was handed over open. The object needs a
        close(): the core calls it if no device claims it (the device left the config)."""
        return None

    def close(self) -> None:
        """The device is removed or the VM ends: release host resources (fds, files)."""
