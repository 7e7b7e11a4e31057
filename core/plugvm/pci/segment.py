"""PCI segment 0: 32 device slots on bus 0 (function 0 only), the host bridge in
slot 0, config space through ports 0xCF8/0xCFC and through ECAM (MMCONFIG), and
the two windows BARs come from. Slots and BAR windows live here, in one place,
because hotplug adds and frees both."""

from __future__ import annotations

import threading

from plugvm import layout
from plugvm.errors import PlugvmError
from plugvm.pci.allocator import AddressAllocator
from plugvm.pci.host_bridge import HostBridge

SLOTS = 32
CONFIG_ENABLE = 1 << 31


class SlotError(PlugvmError, ValueError):
    """A slot is taken, out of range, or none is free."""


class PciSegment:
    def __init__(self, segment_id: int = 0, *, mem64_start: int, mem64_size: int):
        self.segment_id = segment_id
        self.devices: dict[int, object] = {0: HostBridge()}
        self.mem32 = AddressAllocator(layout.MEM_32BIT_DEVICES_START, layout.MEM_32BIT_DEVICES_SIZE)
        self.mem64 = AddressAllocator(mem64_start, mem64_size)
        self._reserved: set[int] = {0}
        self._lock = threading.Lock()
        self.config_io = ConfigIo(self)
        self.ecam = Ecam(self)

    def allocate_slot(self, explicit: int | None = None) -> int:
        with self._lock:
            if explicit is not None:
                if not 1 <= explicit < SLOTS:
                    raise SlotError(f"PCI slot {explicit} does not exist (1 to {SLOTS - 1}; 0 is the host bridge)")
                if explicit in self._reserved:
                    raise SlotError(f"PCI slot {explicit} is already in use")
                self._reserved.add(explicit)
                return explicit
            for slot in range(1, SLOTS):
                if slot not in self._reserved:
                    self._reserved.add(slot)
                    return slot
            raise SlotError(f"all {SLOTS - 1} PCI slots of segment {self.segment_id} are in use")

    def free_slot(self, slot: int) -> None:
        with self._lock:
            if slot != 0:
                self._reserved.discard(slot)
                self.devices.pop(slot, None)

    def attach(self, slot: int, device) -> None:
        self.devices[slot] = device

    def detach(self, slot: int) -> None:
        self.devices.pop(slot, None)

    def config_read(self, bus: int, slot: int, function: int, offset: int, data: memoryview) -> None:
        device = self.devices.get(slot) if bus == 0 and function == 0 else None
        if device is None:
            data[:] = b"\xff" * len(data)
        else:
            device.config.read(offset, data)

    def config_write(self, bus: int, slot: int, function: int, offset: int, data: memoryview) -> None:
        device = self.devices.get(slot) if bus == 0 and function == 0 else None
        if device is not None:
            device.config.write(offset, data)


class ConfigIo:
    """Ports 0xCF8-0xCFF: CONFIG_ADDRESS (a dword at 0xCF8), CONFIG_DATA at 0xCFC-0xCFF."""

    def __init__(self, segment: PciSegment):
        self.segment = segment
        self.address = 0
        self._lock = threading.Lock()

    def _target(self, byte: int):
        address = self.address
        if not address & CONFIG_ENABLE:
            return None
        return ((address >> 16) & 0xFF, (address >> 11) & 0x1F, (address >> 8) & 0x7, (address & 0xFC) + byte)

    def read(self, offset: int, data: memoryview) -> None:
        size = len(data)
        if offset == 0 and size == 4:
            data[:] = self.address.to_bytes(4, "little")
            return
        if offset >= 4 and offset - 4 + size <= 4:
            with self._lock:
                target = self._target(offset - 4)
            if target is not None:
                self.segment.config_read(*target, data)
                return
        data[:] = b"\xff" * size

    def write(self, offset: int, data: memoryview) -> None:
        size = len(data)
        if offset == 0 and size == 4:
            with self._lock:
                self.address = int.from_bytes(data, "little") & 0x80FFFFFC
            return
        if offset >= 4 and offset - 4 + size <= 4:
            with self._lock:
                target = self._target(offset - 4)
            if target is not None:
                self.segment.config_write(*target, data)


class Ecam:
    """The MMCONFIG window of this segment: offset = bus << 20 | device << 15 | function << 12 | register."""

    def __init__(self, segment: PciSegment):
        self.segment = segment

    @staticmethod
    def _target(offset: int):
        return (offset >> 20) & 0xFF, (offset >> 15) & 0x1F, (offset >> 12) & 0x7, offset & 0xFFF

    def read(self, offset: int, data: memoryview) -> None:
        bus, slot, function, register = self._target(offset)
        if register + len(data) > 0x1000 or register % len(data):
            data[:] = b"\xff" * len(data)
            return
        self.segment.config_read(bus, slot, function, register, data)

    def write(self, offset: int, data: memoryview) -> None:
        bus, slot, function, register = self._target(offset)
        if register + len(data) <= 0x1000 and not register % len(data):
            self.segment.config_write(bus, slot, function, register, data)
