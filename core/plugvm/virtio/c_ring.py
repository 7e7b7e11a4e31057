"""The C chain walk of one split virtqueue (ring.c, compiled as plugvm.virtio._ring), for
devices whose per-request Python is the floor: a device's own C calls vq_pop and vq_push
on the queue while the GIL is released.

What a plugin's C may rely on (ABI 1, `CRing.abi`):

    typedef int (*vq_pop_fn)(void *ring, struct iovec *iov, uint64_t *gpas, uint32_t max,
                             uint16_t *head, uint32_t *n, uint32_t *nread);
    typedef void (*vq_push_fn)(void *ring, uint16_t head, uint32_t written);
    struct vq_api { uint32_t abi; vq_pop_fn pop; vq_push_fn push; };

pop() takes the next available chain. It returns 0 when there is none. It returns 1 with
*head and the chain's buffers: iov[0..*n), the readable ones first (*nread of them),
and their guest addresses in gpas[] unless gpas is NULL. It returns 2 when the chain has
more than `max` buffers: iov[] then holds the first `max`, and the caller must serve the
chain some other way (SplitQueue.walk(head) gives it whole). It returns -1 when the guest
broke the queue's rules: nothing is taken, and CRing.error() says why. push() gives a
chain back, as SplitQueue.push() does. Both are valid only inside `with ring as address:`,
on the thread that uses the queue, and `address` is their `ring` argument.

The rules are queue.py's own, checked the same way (tests/unit/test_virtqueue.py runs
every case against both walks). Guest addresses become host pointers only against the
RAM regions taken for that one `with`. While it runs, no region can be unmapped under
it: the region stays exported, as it would be for a Python device holding a view.
"""

from __future__ import annotations

from plugvm.virtio._ring import ffi, lib


class CRing:
    """The C state of one SplitQueue (SplitQueue.c_ring() makes it, and its close() ends it).
    Inside `with`, the queue's indices live in C; they are copied back on the way out."""

    abi = lib.VQ_ABI
    api = int(ffi.cast("uintptr_t", lib.vq_api_table()))    # struct vq_api *, for a plugin's ffi.cast

    def __init__(self, queue):
        self._queue = queue
        self._q = ffi.new("struct vq *")
        # The queue's own ring views, exported for as long as this lives (close() first).
        self._rings = [ffi.from_buffer(v, require_writable=True) for v in queue.ring_views()]
        q = self._q
        q.desc = ffi.cast("struct vq_desc *", self._rings[0])
        q.avail = ffi.cast("uint16_t *", self._rings[1])
        q.used = ffi.cast("uint16_t *", self._rings[2])
        q.size = queue.size
        q.event_idx = queue.event_idx
        self.address = int(ffi.cast("uintptr_t", q))
        self._spans = None
        self._regions = ffi.NULL
        self._exports: list = []
        self._pop_out = None

    def __enter__(self) -> int:
        queue, q = self._queue, self._q
        spans = queue.memory.spans
        if spans is not self._spans:
            self._regions = ffi.new("struct vq_region[]", max(len(spans), 1))
            for region, (start, end, _) in zip(self._regions, spans):
                region.gpa, region.size = start, end - start
            self._spans = spans
        self._exports = exports = [ffi.from_buffer(whole, require_writable=True) for _, _, whole in spans]
        regions = self._regions
        for i, whole in enumerate(exports):
            regions[i].hva = ffi.cast("uint8_t *", whole)
        q.regions, q.nregions = regions, len(exports)
        q.next_avail, q.next_used, q.notify = queue.next_avail, queue.next_used, queue.notifying
        return self.address

    def __exit__(self, *_) -> None:
        queue, q = self._queue, self._q
        queue.next_avail, queue.next_used = q.next_avail, q.next_used
        for whole in self._exports:
            ffi.release(whole)
        self._exports = []

    def error(self) -> str:
        """Why the last pop returned -1."""
        return ffi.string(self._q.error).decode(errors="replace")

    def pop(self):
        """The next chain through the C walk, as SplitQueue.pop() gives it (a Chain of
        memoryviews), or None; VirtqueueError when the guest broke the rules. What the
        virtqueue tests call to hold the C walk to the Python one."""
        from plugvm.virtio.queue import Chain, VirtqueueError

        queue = self._queue
        if self._pop_out is None:
            most = queue.size + 32768          # a direct chain that ends in a full indirect table
            self._pop_out = (ffi.new("struct iovec[]", most), ffi.new("uint64_t[]", most), most,
                             ffi.new("uint16_t *"), ffi.new("uint32_t *"), ffi.new("uint32_t *"))
        iov, gpas, most, head, n, nread = self._pop_out
        with self as address:
            rc = lib.vq_pop(ffi.cast("void *", address), iov, gpas, most, head, n, nread)
        if rc < 0:
            raise VirtqueueError(self.error())
        if rc == 0:
            return None
        if rc == 2:
            raise AssertionError("a chain cannot have more buffers than a queue and an indirect table")
        view = queue.memory.view
        buffers = [view(gpas[i], iov[i].iov_len) for i in range(n[0])]
        return Chain(head[0], buffers[:nread[0]], buffers[nread[0]:])

    def close(self) -> None:
        for ring in self._rings:
            ffi.release(ring)
        self._rings = []
