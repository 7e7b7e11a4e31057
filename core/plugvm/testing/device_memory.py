"""DeviceEnv.guest_ranges without a VM, for tests that build a device in-process (a
plugin's unit tests, the conformance suite): the core's own DeviceMemory, over a
window where segment 0's 64-bit PCI window would be, with a RecordingVm in place of
KVM that records the slots it would be told of. The host mappings are real, so
writes through a range's mapping reach its file as a guest's would."""

from __future__ import annotations

from plugvm.device_memory import DeviceMemory, DeviceRanges
from plugvm.memory_slots import MemorySlots
from plugvm.pci.allocator import AddressAllocator

WINDOW_BASE, WINDOW_SIZE = 1 << 36, 64 << 30     # where a small VM's 64-bit window would be


class RecordingVm:
    """The two Vm methods DeviceMemory calls: `slots` maps each live slot to
    (guest_addr, size, readonly), as KVM would hold it."""

    def __init__(self):
        self.slots: dict[int, tuple[int, int, bool]] = {}

    def map_memory(self, slot: int, guest_phys_addr: int, buffer, readonly: bool = False) -> None:
        if slot in self.slots:
            raise AssertionError(f"slot {slot} is mapped twice")        # KVM would move it, not add it
        self.slots[slot] = (guest_phys_addr, len(buffer), readonly)

    def unmap_memory(self, slot: int) -> None:
        if self.slots.pop(slot, None) is None:
            raise AssertionError(f"slot {slot} is not mapped")          # KVM: EINVAL


def device_memory() -> DeviceMemory:
    """A DeviceMemory whose .vm is a RecordingVm; close() it at the end of the test."""
    return DeviceMemory(RecordingVm(), MemorySlots(), AddressAllocator(WINDOW_BASE, WINDOW_SIZE))


def guest_ranges(device_id: str = "test0", memory: DeviceMemory | None = None) -> DeviceRanges:
    """What a factory gets as DeviceEnv.guest_ranges, for device `device_id`."""
    return (memory or device_memory()).for_device(device_id)
