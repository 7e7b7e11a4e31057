"""The virtio-mem device (virtio 1.2 §5.15): one request queue over a VirtioMemRegion.

No feature bits: VIRTIO_MEM_F_ACPI_PXM needs NUMA, which plugvm has not, and
VIRTIO_MEM_F_UNPLUGGED_INACCESSIBLE is not offered, as by cloud-hypervisor (unplugged
blocks stay mapped and read as zeros). The device is built by the virtio-mem device
type from this boot's VirtioMemHotplug (DeviceEnv.memory_hotplug), whose region it shares.
"""

from __future__ import annotations

from plugvm.virtio.device import VirtioDevice

from plugvm_virtio_mem.requests import DEVICE_TYPE, ERROR, QUEUE_SIZE, read_request, write_response


class VirtioMem(VirtioDevice):
    device_type = DEVICE_TYPE
    queue_sizes = (QUEUE_SIZE,)

    def __init__(self, region):
        self.region = region            # region.VirtioMemRegion
        self.queue = None
        self.context = None

    def config_bytes(self) -> bytes:
        return self.region.config_bytes()

    def activate(self, memory, queues, features, context) -> None:
        self.queue, self.context = queues[0], context
        self.region.connect(context)

    def queue_notify(self, index: int) -> None:
        """The guest's requests, answered in order. Raises NoRoom (a DeviceError) for a
        chain with no room for a response, after answering the chains before it."""
        queue = self.queue
        if index != 0 or queue is None:
            return
        try:
            while (chain := queue.pop()) is not None:
                request = read_request(chain)
                kind, state = (ERROR, 0) if request is None else self.region.execute(request)
                queue.push(chain.head, write_response(chain, kind, state))
        finally:
            if queue.needs_interrupt():
                self.context.interrupt_queue(0)

    def reset(self) -> None:
        # The blocks stay as they are (region.py): only the queue and context go.
        self.region.disconnect()
        self.queue = self.context = None

    def close(self) -> None:
        self.region.disconnect()
