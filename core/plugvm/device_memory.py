"""Guest-physical memory a device owns: a host fd mapped at an address of the PCI
segment's 64-bit window, in a KVM memory slot of its own, as cloud-hypervisor maps a
virtio-pmem file (vmm/src/device_manager.rs make_virtio_pmem_device: the segment's
mem64 allocator, 2 MiB aligned for huge pages, then create_userspace_mapping).

API:
    DeviceMemoryError(PlugvmError, RuntimeError)
    GuestRange                      one mapped range (a handle)
        .guest_addr, .size          where the guest sees it
        .mapping                    the host mmap (writes through it reach the fd when shared)
        .slot, .shared, .readonly
        .close() -> None            unmap it from the guest and the host; idempotent
        .closed -> bool
    DeviceRanges                    one device's view, given to its factory as DeviceEnv.guest_ranges
        .map(fd, size, *, offset=0, shared=True, readonly=False) -> GuestRange
        .ranges() -> list[GuestRange]
    DeviceMemory(vm, slots, window, alignment=ALIGNMENT)   the machine's, one per boot
        .for_device(device_id) -> DeviceRanges
        .ranges(device_id=None) -> list[GuestRange]
        .release(device_id) -> int  close what the device still holds; how many
        .close() -> None            release every device's

Who calls what, and when. A plugin's create() (DeviceType.create) calls
env.guest_ranges.map(), at boot on the main thread or for a hot-add on the API
thread; the device keeps the GuestRange and tells the guest where it is (virtio-pmem's
config space) and may close() it in its own close(). The core (DeviceManager) calls
release() for the device after its create() failed, after its transport was closed at
an eject (on the vCPU thread that wrote B0EJ) and at the VM's teardown: so a range a
plugin forgot is still unmapped, and its address and slot are the next device's. A
release is ordered as KVM needs it: the slot is deleted before the host mapping goes,
so that no vCPU can reach unmapped memory. Thread-safe.

What the guest reaches there, and what it does not. The range is a KVM user memory
region only, as in cloud-hypervisor: vCPUs read and write it with no exit. It is not
part of GuestMemory, so the VMM's own devices cannot DMA into it: a virtqueue
descriptor that points into a device range is outside guest RAM, which the queue
refuses (the guest broke the protocol), as cloud-hypervisor's GuestMemoryMmap, which
holds no pmem region, does. Nor is it RAM: it is in no e820 entry and is never passed
to plugvm_memory_added (vhost-user backends do not map it). The window it comes from
is the one BARs come from (the DSDT's PC00 _CRS already declares it), so a BAR the
guest moves onto a device range is refused like one moved onto another BAR.
"""

from __future__ import annotations

import mmap
import threading

from plugvm.errors import PlugvmError
from plugvm.logs import get_logger
from plugvm.memory import MAP_NORESERVE
from plugvm.pci.allocator import AllocationError

log = get_logger(__name__)
ALIGNMENT = 2 << 20         # cloud-hypervisor's: a range can be backed by 2 MiB huge pages


class DeviceMemoryError(PlugvmError, RuntimeError):
    """A device range could not be mapped (a bad size or offset, no room in the window,
    no KVM slot, the host refused the mapping); nothing of it is left."""


class GuestRange:
    """One fd mapped at [guest_addr, +size) of guest-physical memory, in KVM slot `slot`."""

    def __init__(self, owner: DeviceMemory, device_id: str, guest_addr: int, size: int, mapping: mmap.mmap,
                 slot: int, shared: bool, readonly: bool):
        self._owner, self.device_id = owner, device_id
        self.guest_addr, self.size, self.mapping, self.slot = guest_addr, size, mapping, slot
        self.shared, self.readonly = shared, readonly
        self.closed = False

    @property
    def end(self) -> int:
        return self.guest_addr + self.size

    def close(self) -> None:
        self._owner._release(self)

    def __repr__(self) -> str:
        return (f"GuestRange({self.device_id!r}, {self.guest_addr:#x}, {self.size:#x}, slot={self.slot}"
                f"{', closed' if self.closed else ''})")


class DeviceRanges:
    """What DeviceEnv.guest_ranges is: the service, bound to the device being built, so
    that the core knows whose ranges to release."""

    def __init__(self, owner: DeviceMemory, device_id: str):
        self._owner, self.device_id = owner, device_id

    def map(self, fd: int, size: int, *, offset: int = 0, shared: bool = True, readonly: bool = False) -> GuestRange:
        """Map `size` bytes of `fd` from `offset` into the guest, at a 2 MiB-aligned address
        of the 64-bit PCI window, in a KVM slot of its own, and return the handle.

        shared: MAP_SHARED, so that the guest's writes reach the file; else a private
        copy-on-write mapping (the fd may then be read-only), whose writes are dropped
        when it goes. readonly: the host mapping is PROT_READ and the slot
        KVM_MEM_READONLY (the guest's writes exit as MMIO, which nothing decodes).
        The fd is the caller's: the mapping keeps its own reference, so the caller may
        close it at any time. Raises DeviceMemoryError, leaving nothing mapped."""
        return self._owner._map(self.device_id, fd, size, offset, shared, readonly)

    def ranges(self) -> list[GuestRange]:
        return self._owner.ranges(self.device_id)


class DeviceMemory:
    """The device ranges of one boot: addresses from `window` (segment 0's mem64
    AddressAllocator), slots from `slots` (the machine's MemorySlots), mapped in `vm`."""

    def __init__(self, vm, slots, window, alignment: int = ALIGNMENT):
        self.vm, self.slots, self.window, self.alignment = vm, slots, window, alignment
        self._ranges: list[GuestRange] = []
        self._lock = threading.Lock()

    def for_device(self, device_id: str) -> DeviceRanges:
        return DeviceRanges(self, device_id)

    def ranges(self, device_id: str | None = None) -> list[GuestRange]:
        with self._lock:
            return [r for r in self._ranges if device_id is None or r.device_id == device_id]

    def _map(self, device_id: str, fd: int, size: int, offset: int, shared: bool, readonly: bool) -> GuestRange:
        what = f"device {device_id}: a guest range of {size:#x} bytes"
        if not isinstance(size, int) or size <= 0 or size % mmap.PAGESIZE:
            raise DeviceMemoryError(f"{what}: the size is not a positive multiple of {mmap.PAGESIZE}")
        if not isinstance(offset, int) or offset < 0 or offset % mmap.ALLOCATIONGRANULARITY:
            raise DeviceMemoryError(f"{what}: offset {offset} is not a multiple of {mmap.ALLOCATIONGRANULARITY}")
        try:
            guest_addr = self.window.allocate(size, self.alignment)
        except AllocationError as e:
            raise DeviceMemoryError(f"{what}: no room in the 64-bit PCI window: {e}") from e
        mapping = slot = None
        try:
            flags = (mmap.MAP_SHARED if shared else mmap.MAP_PRIVATE) | MAP_NORESERVE
            prot = mmap.PROT_READ | (0 if readonly else mmap.PROT_WRITE)
            try:
                mapping = mmap.mmap(fd, size, flags, prot, offset=offset)
            except (OSError, ValueError, OverflowError) as e:
                raise DeviceMemoryError(f"{what}: the host cannot map fd {fd}: "
                                        f"{getattr(e, 'strerror', None) or e}") from e
            slot = self.slots.allocate()
            self.vm.map_memory(slot, guest_addr, mapping, readonly=readonly)
        except BaseException as e:
            if slot is not None:
                self.slots.free(slot)
            if mapping is not None:
                mapping.close()
            self.window.free(guest_addr)
            if isinstance(e, PlugvmError) and not isinstance(e, DeviceMemoryError):
                raise DeviceMemoryError(f"{what}: {e}") from e     # a KvmError, no slot left
            raise
        try:
            mapping.madvise(mmap.MADV_DONTDUMP)     # as ch: a core dump of the VMM leaves the file out
        except (OSError, AttributeError):
            pass
        handle = GuestRange(self, device_id, guest_addr, size, mapping, slot, shared, readonly)
        with self._lock:
            self._ranges.append(handle)
        log.info("device range mapped", device_id=device_id, addr=hex(guest_addr), size=size, slot=slot,
                 shared=shared, readonly=readonly)
        return handle

    def _release(self, handle: GuestRange) -> None:
        with self._lock:
            if handle.closed:
                return
            handle.closed = True
            self._ranges.remove(handle)
        try:
            self.vm.unmap_memory(handle.slot)
        except Exception:
            # KVM still maps the host pages: unmapping them would let a vCPU fault on
            # them, so the mapping, the slot and the address stay taken (and logged).
            log.exception("deleting a device range's KVM slot failed; it stays mapped", device_id=handle.device_id,
                          slot=handle.slot)
            return
        try:
            handle.mapping.close()
        except BufferError:
            # A view of it is still exported: the pages go when the last view does.
            log.warning("a device range is still viewed; unmapped when the view goes", device_id=handle.device_id)
        self.slots.free(handle.slot)
        self.window.free(handle.guest_addr)
        log.info("device range released", device_id=handle.device_id, addr=hex(handle.guest_addr), slot=handle.slot)

    def release(self, device_id: str) -> int:
        """Close every range `device_id` still holds (the core, after the device went)."""
        left = self.ranges(device_id)
        for handle in left:
            handle.close()
        if left:
            log.info("released device ranges the device had not closed", device_id=device_id, count=len(left))
        return len(left)

    def close(self) -> None:
        for handle in self.ranges():
            handle.close()
