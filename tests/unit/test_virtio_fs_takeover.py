"""plugvm-virtio-fs's takeover of the queues of a dead virtiofsd: which chains it had
left unanswered, found from the rings alone (in order, out of order, heads reused), and
the ENOTCONN answers, with a hostile ring refused."""

import struct

import pytest
from plugvm_virtio_fs.takeover import OUT_HEADER, Takeover, outstanding

from plugvm.memory import GuestMemory
from plugvm.testing.virtq_driver import DriverQueue, RecordingContext
from plugvm.virtio.device import ExternalQueue
from plugvm.virtio.queue import VirtqueueError

MiB = 1 << 20


@pytest.fixture
def ring():
    memory = GuestMemory(4 * MiB)
    queue = DriverQueue(memory, 0x10000, 8)
    yield memory, queue
    memory.close()


def complete(memory, queue, heads):
    """Play the backend: give these heads back, in this order, on the used ring."""
    idx = struct.unpack("<H", memory.read(queue.used + 2, 2))[0]
    for head in heads:
        memory.write(queue.used + 4 + 8 * (idx % queue.size), struct.pack("<II", head, 16))
        idx = (idx + 1) & 0xFFFF
    memory.write(queue.used + 2, struct.pack("<H", idx))


def fuse(queue, unique):
    return queue.add([struct.pack("<IIQ", 40, 3, unique) + bytes(24)], [64])


def test_in_order_and_out_of_order_completions(ring):
    memory, queue = ring
    heads = [fuse(queue, u)[0] for u in range(4)]
    complete(memory, queue, [heads[2], heads[0]])       # out of order
    out, a, u = outstanding(memory, queue.size, queue.avail, queue.used)
    assert sorted(out) == sorted([heads[1], heads[3]]) and (a, u) == (4, 2)


def test_reused_heads_are_counted(ring):
    memory, queue = ring
    for round in range(3):                              # the ring wraps; heads come back
        heads = [fuse(queue, round * 10 + u)[0] for u in range(3)]
        complete(memory, queue, heads)
        queue.recycle()
    last = fuse(queue, 99)[0]
    out, a, u = outstanding(memory, queue.size, queue.avail, queue.used)
    assert out == [last] and a - u == 1


def test_the_answers_are_enotconn_with_the_requests_unique(ring):
    memory, queue = ring
    head, [(reply, _)] = fuse(queue, 0xABC)
    context = RecordingContext()
    info = ExternalQueue(1, queue.size, queue.desc, queue.avail, queue.used, -1, None)
    takeover = Takeover(memory, info, False, context)
    assert queue.take_used() == [(head, 16)]
    assert OUT_HEADER.unpack(memory.read(reply, 16)) == (16, -107, 0xABC) and context.interrupts == [1]
    # A FORGET (no reply buffer) and a request too short for a header are given back with nothing written.
    forget = queue.add([struct.pack("<IIQ", 40, 2, 5) + bytes(24)], [])[0]
    short = queue.add([b"\x01\x02"], [64])[0]
    takeover.drain()
    assert queue.take_used() == [(forget, 0), (short, 0)]
    takeover.close()


def test_a_hostile_ring_is_refused(ring):
    memory, queue = ring
    fuse(queue, 1)
    memory.write(queue.avail + 2, struct.pack("<H", 200))        # avail.idx far past the queue size
    with pytest.raises(VirtqueueError):
        outstanding(memory, queue.size, queue.avail, queue.used)
