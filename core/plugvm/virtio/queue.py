"""The split virtqueue (virtio 1.2 §2.7), device side, with the guest treated as hostile.

Every guest address is checked once, where a descriptor turns into a memoryview
(GuestMemory.view); every rule a driver can break raises VirtqueueError, which the
transport turns into DEVICE_NEEDS_RESET. The rings are cast to native-endian
memoryviews once: virtio 1.x rings are little-endian and plugvm runs on x86-64.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass

from plugvm.errors import PlugvmError
from plugvm.memory import GuestMemoryError

if sys.byteorder != "little":     # the ring casts below read little-endian fields natively
    raise ImportError("plugvm.virtio.queue needs a little-endian host")

# struct virtq_desc.flags (§2.7.5)
VIRTQ_DESC_F_NEXT = 1
VIRTQ_DESC_F_WRITE = 2
VIRTQ_DESC_F_INDIRECT = 4
# struct virtq_avail.flags / virtq_used.flags (§2.7.6, §2.7.8)
VIRTQ_AVAIL_F_NO_INTERRUPT = 1
VIRTQ_USED_F_NO_NOTIFY = 1

MAX_QUEUE_SIZE = 32768            # §2.7: Queue Size is a power of 2, at most 32768
# An indirect table's length is guest-chosen (a u32); walking 2^28 descriptors in Python
# would stall the I/O thread, so cap it at the largest legal queue (QEMU caps at 1024).
MAX_INDIRECT_DESCS = MAX_QUEUE_SIZE
MAX_CHAIN_BYTES = 0xFFFF_FFFF     # §2.7.5.2: a chain's total length fits used.len (le32)


class VirtqueueError(PlugvmError, ValueError):
    """The guest broke the queue's rules (the transport then sets DEVICE_NEEDS_RESET)."""


@dataclass(slots=True)
class Chain:
    """One descriptor chain taken from the avail ring; zero-length buffers are left out."""

    head: int                     # descriptor index to give back in SplitQueue.push()
    readable: list[memoryview]    # driver→device buffers, in chain order
    writable: list[memoryview]    # device→driver buffers, in chain order

    @property
    def readable_len(self) -> int:
        return sum(map(len, self.readable))

    @property
    def writable_len(self) -> int:
        return sum(map(len, self.writable))


class SplitQueue:
    """One split virtqueue over guest memory. Not thread-safe: use it from one thread
    (the device's I/O thread)."""

    def __init__(self, memory, size: int, desc_addr: int, avail_addr: int, used_addr: int,
                 event_idx: bool = False, *, next_avail: int = 0, next_used: int = 0):
        """`next_avail`/`next_used` restore the free-running indices (0 after a reset)."""
        if not (0 < size <= MAX_QUEUE_SIZE and size & (size - 1) == 0):
            raise VirtqueueError(f"queue size {size} is not a power of two in 1..{MAX_QUEUE_SIZE}")
        # §2.7: alignment of the descriptor table, driver area and device area.
        for name, addr, align in (("desc", desc_addr, 16), ("driver", avail_addr, 2), ("device", used_addr, 4)):
            if addr % align:
                raise VirtqueueError(f"queue {name} address {addr:#x} is not {align}-byte aligned")
        event = 2 if event_idx else 0          # used_event / avail_event trail the rings
        try:
            desc = memory.view(desc_addr, 16 * size)
            avail = memory.view(avail_addr, 4 + 2 * size + event)
            used = memory.view(used_addr, 4 + 8 * size + event)
        except GuestMemoryError as e:
            raise VirtqueueError(f"queue rings are not in guest RAM: {e}") from e
        self.memory = memory
        self.size = size
        self.event_idx = event_idx
        self._mask = size - 1
        self._desc = desc.cast("Q")            # [2i] addr, [2i+1] len | flags << 32 | next << 48
        self._avail = avail.cast("H")          # [0] flags, [1] idx, [2+i] ring, [2+size] used_event
        self._used = used.cast("H")            # [0] flags, [1] idx, [2+4*size] avail_event
        self._used_ring = used[4:4 + 8 * size].cast("I")   # [2i] id, [2i+1] len
        self._views = [self._used_ring, self._desc, self._avail, self._used, desc, avail, used]
        self._used_event = 2 + size
        self._avail_event = 2 + 4 * size
        self.next_avail = next_avail & 0xFFFF
        self.next_used = next_used & 0xFFFF
        self._signalled = self.next_used       # used idx at the last needs_interrupt()
        self._notify = True
        self._c_ring = None
        # Uncontended lock acquire/release is a locked instruction (glibc sem_trywait/sem_post):
        # the store→load fence that the event-suppression handshakes need (§2.7.10, §2.7.7).
        self._fence_lock = threading.Lock()
        if event_idx:
            self._used[self._avail_event] = self.next_avail

    def _fence(self) -> None:
        self._fence_lock.acquire()
        self._fence_lock.release()

    def has_available(self) -> bool:
        """Whether the driver has made chains available that pop() has not taken."""
        return self._avail[1] != self.next_avail

    def pop(self) -> Chain | None:
        """The next available chain, or None when the driver has made nothing new available.
        Raises VirtqueueError when the driver broke the rules; the queue is then broken."""
        avail = self._avail
        last = self.next_avail
        idx = avail[1]
        if idx == last:
            if not (self.event_idx and self._notify):
                return None
            # Our last avail_event store must be visible before we conclude the ring is
            # empty, or a driver that read the old avail_event would skip its kick.
            self._fence()
            idx = avail[1]
            if idx == last:
                return None
        if (idx - last) & 0xFFFF > self.size:
            raise VirtqueueError(f"avail.idx {idx} is more than the queue size {self.size} ahead of {last}")
        chain = self._walk(avail[2 + (last & self._mask)])
        last = self.next_avail = (last + 1) & 0xFFFF
        if self.event_idx and self._notify:
            self._used[self._avail_event] = last
        return chain

    def walk(self, head: int) -> Chain:
        """The chain starting at descriptor `head`, whether or not pop() took it: for a
        device that takes a queue over from a backend that left chains unanswered (it
        had popped them itself). VirtqueueError for a head or chain that breaks the rules."""
        if not 0 <= head < self.size:
            raise VirtqueueError(f"descriptor head {head} is not below the queue size {self.size}")
        return self._walk(head)

    def _walk(self, head: int) -> Chain:
        table, table_len = self._desc, self.size
        if head >= table_len:
            raise VirtqueueError(f"avail ring head {head} is not below the queue size {table_len}")
        view = self.memory.view
        readable: list[memoryview] = []
        writable: list[memoryview] = []
        index, count, total = head, 0, 0
        indirect = wrote = False
        while True:
            count += 1
            if count > table_len:     # every descriptor at most once, else it loops (§2.7.5.2)
                raise VirtqueueError(f"descriptor chain from head {head} is longer than its table ({table_len})")
            addr = table[2 * index]
            meta = table[2 * index + 1]
            length = meta & 0xFFFF_FFFF
            flags = (meta >> 32) & 0xFFFF
            if flags & VIRTQ_DESC_F_INDIRECT:
                table, table_len = self._indirect(head, addr, length, flags, indirect)
                index, count, indirect = 0, 0, True
                continue
            if flags & VIRTQ_DESC_F_WRITE:
                wrote = True
            elif wrote:
                raise VirtqueueError(f"descriptor chain from head {head}: a readable buffer follows a writable one")
            if length:
                total += length
                if total > MAX_CHAIN_BYTES:
                    raise VirtqueueError(f"descriptor chain from head {head} is longer than 2^32 bytes")
                try:
                    buf = view(addr, length)
                except GuestMemoryError as e:
                    raise VirtqueueError(f"descriptor chain from head {head}: {e}") from e
                (writable if wrote else readable).append(buf)
            if not flags & VIRTQ_DESC_F_NEXT:
                return Chain(head, readable, writable)
            index = meta >> 48
            if index >= table_len:
                raise VirtqueueError(f"descriptor chain from head {head}: next {index} is not below {table_len}")

    def _indirect(self, head: int, addr: int, length: int, flags: int, nested: bool) -> tuple[memoryview, int]:
        """The indirect table a descriptor refers to, as a 'Q' cast, and its length (§2.7.5.3)."""
        if nested:
            raise VirtqueueError(f"descriptor chain from head {head}: nested indirect table")
        if flags & VIRTQ_DESC_F_NEXT:
            raise VirtqueueError(f"descriptor chain from head {head}: an indirect descriptor has NEXT set")
        if length == 0 or length % 16 or length > 16 * MAX_INDIRECT_DESCS:
            raise VirtqueueError(f"descriptor chain from head {head}: bad indirect table length {length:#x}")
        try:
            return self.memory.view(addr, length).cast("Q"), length // 16
        except GuestMemoryError as e:
            raise VirtqueueError(f"descriptor chain from head {head}: indirect table: {e}") from e

    def push(self, head: int, written: int) -> None:
        """Give chain `head` back with `written` bytes written into its writable buffers,
        then publish the new used.idx."""
        if not 0 <= head < self.size:
            raise VirtqueueError(f"used element id {head} is not below the queue size {self.size}")
        if not 0 <= written <= MAX_CHAIN_BYTES:
            raise VirtqueueError(f"used element length {written} does not fit a u32")
        used = self.next_used
        slot = 2 * (used & self._mask)
        self._used_ring[slot] = head
        self._used_ring[slot + 1] = written
        # The element is stored before the index (x86 keeps stores in order).
        self.next_used = used = (used + 1) & 0xFFFF
        self._used[1] = used

    def serve(self, answer) -> bool:
        """Answer every chain the driver made available, in order: push(chain.head,
        answer(chain)), `answer` returning the bytes it wrote into the chain's writable
        buffers. Returns needs_interrupt(). An exception from `answer` (or from the queue,
        for a chain the guest broke) propagates: the chains answered before it stay
        published, and no interrupt is asked for (the transport then sets NEEDS_RESET)."""
        while (chain := self.pop()) is not None:
            self.push(chain.head, answer(chain))
        return self.needs_interrupt()

    def needs_interrupt(self) -> bool:
        """Whether the driver wants an interrupt for the elements pushed since the last call
        (§2.7.7, §2.7.10): with event_idx, vring_need_event over used_event; without, unless
        VRING_AVAIL_F_NO_INTERRUPT is set."""
        new, old = self.next_used, self._signalled
        if new == old:
            return False
        self._signalled = new
        self._fence()             # our used.idx store before the driver's used_event / flags load
        if self.event_idx:
            event = self._avail[self._used_event]
            return (new - event - 1) & 0xFFFF < (new - old) & 0xFFFF
        return not self._avail[0] & VIRTQ_AVAIL_F_NO_INTERRUPT

    def set_notification(self, enabled: bool) -> None:
        """Ask the driver to kick (or not to) when it makes chains available. After enabling,
        re-check has_available(): a chain may have arrived while kicks were off."""
        self._notify = enabled
        if self.event_idx:
            if enabled:       # with event_idx, "off" is simply not moving avail_event on
                self._used[self._avail_event] = self.next_avail
        else:
            self._used[0] = 0 if enabled else VIRTQ_USED_F_NO_NOTIFY
        if enabled:
            self._fence()     # our store before the caller's avail.idx load

    @property
    def notifying(self) -> bool:
        """Whether kicks are asked for (set_notification)."""
        return self._notify

    def ring_views(self) -> tuple[memoryview, memoryview, memoryview]:
        """The descriptor table, driver area and device area, as bytes."""
        return self._views[4], self._views[5], self._views[6]

    def c_ring(self):
        """This queue's C walk (plugvm.virtio.c_ring.CRing), made on first use, for a
        device whose own C serves the queue; closed with the queue."""
        if self._c_ring is None:
            from plugvm.virtio.c_ring import CRing     # the cffi module only for devices that use it
            self._c_ring = CRing(self)
        return self._c_ring

    def close(self) -> None:
        """Release the ring views (GuestMemory.close() fails while views are exported)."""
        if self._c_ring is not None:
            self._c_ring.close()        # its exports of the ring views first
            self._c_ring = None
        for v in self._views:
            v.release()
        self._views.clear()
