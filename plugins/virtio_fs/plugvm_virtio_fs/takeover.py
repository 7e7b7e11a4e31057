"""The queues of a virtio-fs whose virtiofsd is gone: the device takes them over and
answers every request itself with ENOTCONN, so that the guest's FUSE requests end
(its reader sees "Transport endpoint is not connected") and its driver can unbind
when the device is removed. Linux's virtio-fs waits for every request in flight
before it lets go of a device: left unanswered, a removal would never finish, the
id and slot never come free (cloud-hypervisor's #8763).

What virtiofsd had taken but not answered is found from the rings alone: it popped
chains without telling us (GET_VRING_BASE needs a live backend), so the chains still
out are the avail ring's recent heads that the used ring has not given back, counted
over the last `size` entries of each (a head may be reused). Should that not add up to
avail.idx - used.idx (a chain outstanding while a whole ring of others completed),
the entries from used.idx on are taken instead, as if virtiofsd answered in order.
"""

from __future__ import annotations

import errno
import struct
from collections import Counter

from plugvm.logs import get_logger
from plugvm.virtio.queue import SplitQueue, VirtqueueError

log = get_logger(__name__)
IN_HEADER = struct.Struct("<IIQ")          # fuse_in_header's len, opcode, unique (40 bytes in all)
IN_HEADER_SIZE = 40
OUT_HEADER = struct.Struct("<IiQ")         # fuse_out_header: len, error, unique


def _u16(memory, addr: int) -> int:
    return struct.unpack("<H", memory.read(addr, 2))[0]


def outstanding(memory, size: int, avail: int, used: int) -> tuple[list[int], int, int]:
    """(the heads still out, avail.idx, used.idx) of a ring whose backend vanished."""
    a, u = _u16(memory, avail + 2), _u16(memory, used + 2)
    missing = (a - u) & 0xFFFF
    if missing > size:
        raise VirtqueueError(f"avail.idx {a} is {missing} ahead of used.idx {u}, past the queue size {size}")
    # The real entries of each ring: all `size` once the index has passed it (and, after
    # the 16-bit index wrapped, fewer than there are: the count check then falls back).
    avail_heads = Counter(_u16(memory, avail + 4 + 2 * ((a - k) % size)) for k in range(1, min(size, a) + 1))
    used_heads = Counter(struct.unpack("<I", memory.read(used + 4 + 8 * ((u - k) % size), 4))[0]
                         for k in range(1, min(size, u) + 1))
    out = list((avail_heads - used_heads).elements())
    if len(out) != missing:
        out = [_u16(memory, avail + 4 + 2 * ((u + k) % size)) for k in range(missing)]
    return out, a, u


class Takeover:
    """One queue, answered by plugvm: outstanding chains at once, new ones as they come."""

    def __init__(self, memory, queue_info, event_idx: bool, context):
        self.index, self.context = queue_info.index, context
        heads, a, u = outstanding(memory, queue_info.size, queue_info.avail, queue_info.used)
        self.queue = SplitQueue(memory, queue_info.size, queue_info.desc, queue_info.avail, queue_info.used,
                                event_idx, next_avail=a, next_used=u)
        for head in heads:
            self._answer(self.queue.walk(head))
        self._signal()
        log.info("virtio-fs queue taken over", queue=self.index, answered=len(heads))

    def drain(self) -> None:
        """The guest kicked: answer what it made available since."""
        while (chain := self.queue.pop()) is not None:
            self._answer(chain)
        self._signal()

    def _answer(self, chain) -> None:
        """ENOTCONN for a request that expects an answer; a FORGET (hiprio, no writable
        buffer) is just given back."""
        header = b"".join(bytes(b) for b in chain.readable)[:IN_HEADER_SIZE]
        written = 0
        if len(header) >= IN_HEADER.size and chain.writable_len >= OUT_HEADER.size:
            _, _, unique = IN_HEADER.unpack_from(header)
            reply = OUT_HEADER.pack(OUT_HEADER.size, -errno.ENOTCONN, unique)
            left = reply
            for buffer in chain.writable:
                n = min(len(buffer), len(left))
                buffer[:n] = left[:n]
                left = left[n:]
                if not left:
                    break
            written = OUT_HEADER.size
        self.queue.push(chain.head, written)

    def _signal(self) -> None:
        if self.queue.needs_interrupt():
            self.context.interrupt_queue(self.index)

    def close(self) -> None:
        self.queue.close()
