"""The driver side of a split virtqueue, for tests that drive a device without a guest:
it lays out the rings in a GuestMemory, offers chains, and reads what the device used.
Plugin tests (and the conformance suite) use it with plugvm.virtio.queue.SplitQueue."""

from __future__ import annotations

import struct

from plugvm.virtio.queue import VIRTQ_DESC_F_NEXT, VIRTQ_DESC_F_WRITE, SplitQueue

DESC = struct.Struct("<QIHH")


class DriverQueue:
    """A queue of `size` entries at `base`, with data buffers allocated after the rings."""

    def __init__(self, memory, base: int, size: int, event_idx: bool = False, data_size: int = 1 << 20):
        self.memory, self.size = memory, size
        self.desc = base
        self.avail = base + 16 * size
        self.used = (self.avail + 6 + 2 * size + 4095) // 4096 * 4096
        self.data = self.used + 6 + 8 * size
        self.data_end = self.data + data_size
        self.next_data = self.data
        self.next_desc = 0
        self.avail_idx = 0
        self.used_seen = 0
        self.memory.write(base, bytes(self.data - base))
        self.event_idx = event_idx

    def device_queue(self) -> SplitQueue:
        return SplitQueue(self.memory, self.size, self.desc, self.avail, self.used, self.event_idx)

    def _buffer(self, length: int) -> int:
        addr = self.next_data
        self.next_data += max(length, 1)
        if self.next_data > self.data_end:
            raise MemoryError("the test's data area is full")
        return addr

    def add(self, readable: list[bytes] = (), writable: list[int] = ()) -> tuple[int, list[tuple[int, int]]]:
        """Offer one chain: readable buffers with these contents, then writable buffers of these
        sizes. Returns (head, [(addr, size) of each writable buffer])."""
        parts = [(data, 0) for data in readable] + [(bytes(size), VIRTQ_DESC_F_WRITE) for size in writable]
        indices = [(self.next_desc + i) % self.size for i in range(len(parts))]
        self.next_desc = (self.next_desc + len(parts)) % self.size
        out = []
        for i, (index, (data, flags)) in enumerate(zip(indices, parts)):
            addr = self._buffer(len(data))
            self.memory.write(addr, data)
            if flags & VIRTQ_DESC_F_WRITE:
                out.append((addr, len(data)))
            more = i + 1 < len(parts)
            self.memory.write(self.desc + 16 * index, DESC.pack(addr, len(data), flags | (VIRTQ_DESC_F_NEXT if more else 0),
                                                                indices[i + 1] if more else 0))
        self.memory.write(self.avail + 4 + 2 * (self.avail_idx % self.size), struct.pack("<H", indices[0]))
        self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.memory.write(self.avail + 2, struct.pack("<H", self.avail_idx))
        return indices[0], out

    def desc_addr(self, index: int) -> int:
        """The guest address of descriptor `index`'s buffer."""
        return struct.unpack("<Q", self.memory.read(self.desc + 16 * index, 8))[0]

    def resubmit(self, heads: list[int]) -> None:
        """Offer chains again that the device has used (their descriptors are unchanged)."""
        for head in heads:
            self.memory.write(self.avail + 4 + 2 * (self.avail_idx % self.size), struct.pack("<H", head))
            self.avail_idx = (self.avail_idx + 1) & 0xFFFF
        self.memory.write(self.avail + 2, struct.pack("<H", self.avail_idx))

    def recycle(self) -> None:
        """Reuse the data area from its start (once the device used every chain offered)."""
        self.next_data = self.data

    def take_used(self) -> list[tuple[int, int]]:
        """The (head, length) elements the device used since the last call."""
        idx = struct.unpack("<H", self.memory.read(self.used + 2, 2))[0]
        elements = []
        while self.used_seen != idx:
            slot = self.used + 4 + 8 * (self.used_seen % self.size)
            elements.append(struct.unpack("<II", self.memory.read(slot, 8)))
            self.used_seen = (self.used_seen + 1) & 0xFFFF
        return elements


class RecordingContext:
    """A DeviceContext that records what the device asked for."""

    def __init__(self):
        self.interrupts: list[int] = []
        self.config_interrupts = 0
        self.watched: dict[int, object] = {}

    def interrupt_queue(self, index: int) -> None:
        self.interrupts.append(index)

    def interrupt_config(self) -> None:
        self.config_interrupts += 1

    def watch(self, fd: int, callback) -> None:
        self.watched[fd] = callback

    def unwatch(self, fd: int) -> None:
        self.watched.pop(fd, None)
