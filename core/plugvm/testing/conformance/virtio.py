"""VirtioDeviceTests: the device, driven in-process through split queues laid out in a
GuestMemory (plugvm.testing.virtq_driver's way): its features and queues are sane, it
activates with what a driver may negotiate, reset() forgets the queues, and a hostile
guest (hypothesis) gets at worst DEVICE_NEEDS_RESET — only DeviceError or VirtqueueError
come out, nothing is written outside the buffers the guest gave for writing and the used
ring, and the used ring reports only chains offered, with lengths they can hold."""

from __future__ import annotations

import os
import select
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugvm.memory import GuestMemory
from plugvm.testing.conformance import capabilities as caps
from plugvm.testing.conformance import hostile
from plugvm.testing.virtq_driver import DriverQueue, RecordingContext
from plugvm.virtio.device import (VIRTIO_F_EVENT_IDX, VIRTIO_F_INDIRECT_DESC, VIRTIO_F_VERSION_1, DeviceError,
                                  VirtioDevice)
from plugvm.virtio.queue import SplitQueue, VirtqueueError

GUEST_ERRORS = (DeviceError, VirtqueueError)
TRANSPORT_BITS = VIRTIO_F_VERSION_1 | VIRTIO_F_EVENT_IDX | VIRTIO_F_INDIRECT_DESC
# virtio 1.2 §6: bits 24-49 are the transport's and reserved; a device's own are 0-23 and 50-63 (of 64).
RESERVED_BITS = ((1 << 50) - 1) & ~((1 << 24) - 1)


class ConformanceContext(RecordingContext):
    """A DeviceContext that records, and notes misuse rather than raising into the device."""

    def __init__(self, device: str, queues: int):
        super().__init__()
        self.device, self.queues = device, queues
        self.misuse: list[str] = []
        self.needs_reset: list[str] = []

    def interrupt_queue(self, index: int) -> None:
        if not 0 <= index < self.queues:
            self.misuse.append(f"interrupt_queue({index}) for a device of {self.queues} queues")
        super().interrupt_queue(index)

    def watch(self, fd: int, callback) -> None:
        try:
            os.fstat(fd)
        except OSError:
            self.misuse.append(f"watch({fd}) of an fd that is not open")
        super().watch(fd, callback)

    def report_needs_reset(self, reason: str) -> None:
        self.needs_reset.append(reason)

    def run_watches(self) -> None:
        """Call the callbacks of watched fds that are readable now, as the I/O thread does."""
        fds = [fd for fd in self.watched if fd >= 0]
        if not fds:
            return
        try:
            readable, _, _ = select.select(fds, [], [], 0)
        except (OSError, ValueError):
            return
        for fd in readable:
            callback = self.watched.get(fd)
            if callback is not None:
                callback()


def _guarded(device: str, what: str, call):
    """Run `call`; a guest error ends the run (True: the transport would set
    DEVICE_NEEDS_RESET), any other exception fails the test naming it."""
    try:
        call()
    except GUEST_ERRORS:
        return True
    except Exception as e:
        raise AssertionError(f"device {device!r}: {what} raised {type(e).__name__}: {e}; a guest's misbehaviour may "
                             f"only raise plugvm.virtio.device.DeviceError or plugvm.virtio.queue.VirtqueueError") from e
    return False


class VirtioDeviceTests:
    """The device as the virtio-pci transport drives it, without a guest."""

    def test_features_queues_and_config_are_sane(self, device_type, conformance_device, capabilities):
        caps.require(capabilities, caps.VIRTIO, device_type.name)
        d, name = conformance_device, repr(device_type.name)
        assert isinstance(d, VirtioDevice), f"device {name}: create() gave a {type(d).__name__}, not a VirtioDevice"
        assert isinstance(d.device_type, int) and d.device_type > 0, f"device {name}: device_type {d.device_type!r}"
        sizes = d.queue_sizes
        assert sizes and all(isinstance(s, int) and 0 < s <= 32768 and not s & (s - 1) for s in sizes), (
            f"device {name}: queue_sizes {sizes!r} are not powers of two up to 32768 (virtio 1.2 §2.7)")
        assert isinstance(d.config_bytes(), bytes), f"device {name}: config_bytes() is not bytes"
        features = d.device_features()
        assert isinstance(features, int) and 0 <= features < 1 << 64, f"device {name}: device_features() {features!r}"
        if d.external_queues:
            assert features & VIRTIO_F_VERSION_1, (
                f"device {name}: an external_queues device offers exactly its features, and they lack VERSION_1")
            assert caps.QUEUES not in capabilities, (
                f"device {name} declares 'queues' but its queues are external (external_queues=True)")
        else:
            reserved = features & RESERVED_BITS
            assert not reserved, (f"device {name}: device_features() has bits {_bits(reserved)}, which are the "
                                  f"transport's or reserved (virtio 1.2 §6: a device's own are 0-23 and 50-63)")
            assert caps.QUEUES in capabilities, (
                f"device {name} serves its queues in-process (external_queues=False) but does not declare 'queues': "
                f"the hostile-queue test must apply to it")

    def test_reset_before_activate_is_harmless(self, device_type, conformance_device, capabilities):
        caps.require(capabilities, caps.VIRTIO, device_type.name)
        # A driver resets the device at probe, before it ever set DRIVER_OK.
        _no_error(device_type.name, "reset() before activate()", conformance_device.reset)

    def test_activates_with_what_a_driver_negotiates_and_reset_forgets_the_queues(self, device_type,
                                                                                conformance_device, capabilities):
        caps.require(capabilities, caps.VIRTIO, device_type.name)
        caps.require(capabilities, caps.QUEUES, device_type.name)
        device, name = conformance_device, device_type.name
        offered = device.device_features() | TRANSPORT_BITS
        memory = GuestMemory(hostile.MEMORY_SIZE)
        try:
            for features in (VIRTIO_F_VERSION_1, offered):
                old = _drivers(memory, device, 0, features)
                context = ConformanceContext(name, len(device.queue_sizes))
                before = memory.read(0, hostile.MEMORY_SIZE)
                _no_error(name, f"activate() with features {features:#x}",
                          lambda: device.activate(memory, [q.device_queue() for q in old], features, context))
                for index in range(len(old)):
                    _no_error(name, f"queue_notify({index}) on an empty queue", lambda: device.queue_notify(index))
                changed = hostile.outside(hostile.changed_ranges(before, memory.read(0, hostile.MEMORY_SIZE)),
                                          [(q.used, 6 + 8 * q.size) for q in old])
                assert not changed, (f"device {name!r}: with empty queues, wrote {changed[0][1]} bytes at "
                                     f"{changed[0][0]:#x}, outside the used rings")
                _no_error(name, "reset()", device.reset)
                # The guest reuses the old rings' memory; the device, activated on new rings,
                # must never touch them again.
                for q in old:
                    q.add([bytes(64)], [256])
                new = _drivers(memory, device, len(old), features)
                before = memory.read(0, hostile.MEMORY_SIZE)
                context = ConformanceContext(name, len(device.queue_sizes))
                _no_error(name, "activate() after reset()",
                          lambda: device.activate(memory, [q.device_queue() for q in new], features, context))
                for index in range(len(new)):
                    _no_error(name, f"queue_notify({index}) after reset()", lambda: device.queue_notify(index))
                context.run_watches()
                stale = hostile.outside(hostile.changed_ranges(before, memory.read(0, hostile.MEMORY_SIZE)),
                                        [(q.used, 6 + 8 * q.size) for q in new])
                assert not stale, (f"device {name!r}: after reset() and a new activate(), wrote {stale[0][1]} bytes at "
                                   f"{stale[0][0]:#x}, in the rings or buffers of the queues it had before the reset")
                assert not context.misuse, f"device {name!r}: {'; '.join(context.misuse)}"
                _no_error(name, "reset()", device.reset)
        finally:
            memory.close()

    def test_a_hostile_guest_gets_at_worst_needs_reset(self, device_type, conformance_device, capabilities,
                                                       hostile_examples, request_samples):
        caps.require(capabilities, caps.VIRTIO, device_type.name)
        caps.require(capabilities, caps.QUEUES, device_type.name)
        device, name = conformance_device, device_type.name
        offered = device.device_features() | TRANSPORT_BITS
        count = min(len(device.queue_sizes), hostile.MAX_QUEUES)
        memory = GuestMemory(hostile.MEMORY_SIZE)
        zeros = bytes(hostile.MEMORY_SIZE)

        @settings(max_examples=hostile_examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
        @given(st.data())
        def run(data):
            memory.write(0, zeros)
            event_idx = data.draw(st.booleans(), label="event_idx")
            features = (offered & data.draw(st.integers(0, 2**64 - 1), label="feature mask")) | VIRTIO_F_VERSION_1
            features = features | VIRTIO_F_EVENT_IDX if event_idx else features & ~VIRTIO_F_EVENT_IDX
            layouts = []
            for index in range(count):
                size = data.draw(st.sampled_from([s for s in hostile.SIZES if s <= device.queue_sizes[index]]),
                                 label=f"queue {index} size")
                layout = hostile.QueueLayout(index, size)
                hostile.lay_out(data.draw, memory, layout, request_samples, event_idx)
                layouts.append(layout)
            kicks = data.draw(st.lists(st.integers(0, count - 1), min_size=1, max_size=6), label="kicks")
            queues = [SplitQueue(memory, q.size, q.desc, q.avail, q.used, event_idx) for q in layouts]
            before = memory.read(0, hostile.MEMORY_SIZE)
            context = ConformanceContext(name, len(device.queue_sizes))
            padded = queues + [None] * (len(device.queue_sizes) - count)
            try:
                stopped = _guarded(name, "activate()", lambda: device.activate(memory, padded, features, context))
                for index in kicks:
                    if stopped:
                        break
                    stopped = (_guarded(name, f"queue_notify({index})", lambda: device.queue_notify(index))
                               or _guarded(name, "a watched fd's callback", context.run_watches))
                after = memory.read(0, hostile.MEMORY_SIZE)
            finally:
                _no_error(name, "reset()", device.reset)
                for q in queues:
                    q.close()
            _check_writes(name, hostile.Snapshot(before), after, layouts)
            assert not context.misuse, f"device {name!r}: {'; '.join(context.misuse)}"

        try:
            run()
        finally:
            memory.close()


def _check_writes(name: str, before: hostile.Snapshot, after: bytes, layouts) -> None:
    allowed = [(q.used, q.used_bytes) for q in layouts]
    chains = {}
    for q in layouts:
        for head in q.heads:
            chains[(q.index, head)] = writable = hostile.walk(before, q, head)
            allowed += writable
    for addr, length in hostile.outside(hostile.changed_ranges(before.data, after), allowed):
        raise AssertionError(f"device {name!r} wrote {length} bytes at {addr:#x} outside the buffers it was given "
                             f"(the writable buffers offered: {_ranges([w for ws in chains.values() for w in ws])})")
    for q in layouts:
        flags, idx = struct.unpack_from("<HH", after, q.used)
        assert idx <= len(q.heads), (f"device {name!r}: used.idx of queue {q.index} is {idx}, but only "
                                     f"{len(q.heads)} chains were offered")
        for slot in range(idx):
            head, length = struct.unpack_from("<II", after, q.used + 4 + 8 * (slot % q.size))
            assert head in q.heads, (f"device {name!r}: queue {q.index}'s used ring returns descriptor {head}, "
                                     f"which was not an offered head ({q.heads})")
            room = sum(n for _, n in chains[(q.index, head)])
            assert length <= room, (f"device {name!r}: queue {q.index}'s used ring says {length} bytes were written "
                                    f"into chain {head}, whose writable buffers hold {room}")


def _drivers(memory, device, first: int, features: int) -> list[DriverQueue]:
    """One DriverQueue per device queue (at most hostile.MAX_QUEUES), from slot `first`."""
    count = min(len(device.queue_sizes), hostile.MAX_QUEUES)
    event_idx = bool(features & VIRTIO_F_EVENT_IDX)
    return [DriverQueue(memory, (first + i) * hostile.QUEUE_STRIDE // 2, min(device.queue_sizes[i], 16), event_idx,
                        data_size=hostile.QUEUE_STRIDE // 2 - 0x3000) for i in range(count)]


def _no_error(name: str, what: str, call) -> None:
    try:
        call()
    except Exception as e:
        raise AssertionError(f"device {name!r}: {what} raised {type(e).__name__}: {e}") from e


def _bits(mask: int) -> str:
    return ", ".join(str(i) for i in range(64) if mask >> i & 1)


def _ranges(ranges) -> str:
    shown = ", ".join(f"{a:#x}+{n}" for a, n in sorted(ranges)[:8])
    return (shown + ", ...") if len(ranges) > 8 else (shown or "none")
