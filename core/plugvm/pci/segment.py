"""A PCI segment: 32 device slots on bus 0 (function 0 only), the host bridge in
slot 0 of segment 0, config space through ports 0xCF8/0xCFC and through ECAM
(MMCONFIG), and the two windows BARs come from. Slots and BAR windows live here, in
one place, because hotplug adds and frees both (notes §2.2, §3e, §3h).

API:
    SlotError(PlugvmError, ValueError)
    PciSegment(segment_id: int = 0, *, mem64_start: int, mem64_size: int, mem32: tuple[int, int] = whole)
        .segment_id
        .mem32: AddressAllocator         its share of [0xC000_0000, +640 MiB) (all of it by default)
        .mem64: AddressAllocator         [mem64_start, +mem64_size) (the machine computes it)
        .ecam_base: int                  where .ecam goes on the MMIO bus (1 MiB per segment)
        .config_io                       bus device for ports 0xCF8-0xCFF (segment 0 only)
        .ecam                            bus device for this segment's 1 MiB of MMCONFIG
        .devices: dict[int, device]      slot → device; a device has .config: PciConfigSpace
        .allocate_slot(explicit: int | None = None) -> int
            reserves `explicit`, else the lowest free slot; SlotError when out of
            range, taken, or none is free. Callers reserve explicit ids first.
        .free_slot(slot) -> None         releases the slot and detaches its device
        .attach(slot, device) -> None    puts a device in a slot (reserving it if needed);
                                         SlotError if out of range or occupied
        .detach(slot) -> None            removes the device, keeps the slot reserved
        .config_read(bus, slot, function, register, data) / .config_write(...)

Empty slots, functions other than 0 and buses other than 0 read all ones; writes
to them are dropped. Slot allocation and the CONFIG_ADDRESS register are locked:
vCPU threads get here concurrently.
"""

from __future__ import annotations

import threading

from plugvm import layout
from plugvm.errors import PlugvmError
from plugvm.pci.allocator import AddressAllocator
from plugvm.pci.host_bridge import HostBridge

SLOTS = 32
CONFIG_ENABLE = 1 << 31
CONFIG_SPACE_SIZE = 0x1000


class SlotError(PlugvmError, ValueError):
    """A slot is taken, out of range, or none is free."""


def segment_windows(count: int, mem64_start: int, mem64_size: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """((mem32 start, size), (mem64 start, size)) for each of `count` segments: the 32-bit
    device window and the 64-bit one split in equal shares, as cloud-hypervisor splits
    them at its default aperture weights (1 each), each share aligned (4 MiB below 4 GiB,
    4 GiB above)."""
    mem32 = layout.MEM_32BIT_DEVICES_SIZE // count // (4 << 20) * (4 << 20)
    mem64 = mem64_size // count // (4 << 30) * (4 << 30)
    if not mem32 or not mem64:
        raise SlotError(f"{count} PCI segments do not fit the PCI windows")
    return [((layout.MEM_32BIT_DEVICES_START + i * mem32, mem32), (mem64_start + i * mem64, mem64))
            for i in range(count)]


class PciSegment:
    """Bus 0 of one segment, its slots and its BAR windows."""

    def __init__(self, segment_id: int = 0, *, mem64_start: int, mem64_size: int,
                 mem32: tuple[int, int] = (layout.MEM_32BIT_DEVICES_START, layout.MEM_32BIT_DEVICES_SIZE)):
        self.segment_id = segment_id
        # Only segment 0 has a root device (cloud-hypervisor); elsewhere slot 0 is free.
        self._first_slot = 1 if segment_id == 0 else 0
        self.devices: dict[int, object] = {0: HostBridge()} if segment_id == 0 else {}
        self._reserved: set[int] = set(self.devices)
        self.mem32 = AddressAllocator(*mem32)
        self.mem64 = AddressAllocator(mem64_start, mem64_size)
        self.ecam_base = layout.PCI_MMCONFIG_START + segment_id * layout.PCI_MMCONFIG_SEGMENT_SIZE
        self._lock = threading.Lock()
        self.config_io = ConfigIo(self)
        self.ecam = Ecam(self)

    def _check_range(self, slot: int) -> None:
        if not self._first_slot <= slot < SLOTS:
            where = " (0 is the host bridge)" if self._first_slot else ""
            raise SlotError(f"PCI slot {slot} does not exist ({self._first_slot} to {SLOTS - 1}{where})")

    def allocate_slot(self, explicit: int | None = None) -> int:
        with self._lock:
            if explicit is not None:
                self._check_range(explicit)
                if explicit in self._reserved:
                    raise SlotError(f"PCI slot {explicit} of segment {self.segment_id} is already in use")
                self._reserved.add(explicit)
                return explicit
            for slot in range(self._first_slot, SLOTS):
                if slot not in self._reserved:
                    self._reserved.add(slot)
                    return slot
            raise SlotError(f"all {SLOTS - self._first_slot} PCI slots of segment {self.segment_id} are in use")

    def free_slot(self, slot: int) -> None:
        with self._lock:
            if slot >= self._first_slot:
                self._reserved.discard(slot)
                self.devices.pop(slot, None)

    def attach(self, slot: int, device) -> None:
        with self._lock:
            self._check_range(slot)
            if self.devices.get(slot, device) is not device:
                raise SlotError(f"PCI slot {slot} of segment {self.segment_id} already holds a device")
            self._reserved.add(slot)
            self.devices[slot] = device

    def detach(self, slot: int) -> None:
        with self._lock:
            if slot >= self._first_slot:
                self.devices.pop(slot, None)

    def _device(self, bus: int, slot: int, function: int):
        return self.devices.get(slot) if bus == 0 and function == 0 else None

    def config_read(self, bus: int, slot: int, function: int, register: int, data: memoryview) -> None:
        device = self._device(bus, slot, function)
        if device is None:
            data[:] = b"\xff" * len(data)      # master abort: what Linux takes for "nothing here"
        else:
            device.config.read(register, data)

    def config_write(self, bus: int, slot: int, function: int, register: int, data: memoryview) -> None:
        device = self._device(bus, slot, function)
        if device is not None:
            device.config.write(register, data)


class ConfigIo:
    """Ports 0xCF8-0xCFF (configuration mechanism #1, PCI 3.0 §3.2.2.3.2): CONFIG_ADDRESS
    is a dword at 0xCF8 (enable bit 31, bus 23:16, device 15:11, function 10:8,
    register 7:2); CONFIG_DATA at 0xCFC-0xCFF takes byte, word or dword accesses."""

    def __init__(self, segment: PciSegment):
        self.segment = segment
        self.address = 0
        self._lock = threading.Lock()

    def _target(self, byte: int) -> tuple[int, int, int, int] | None:
        with self._lock:
            address = self.address
        if not address & CONFIG_ENABLE:
            return None
        return (address >> 16) & 0xFF, (address >> 11) & 0x1F, (address >> 8) & 0x7, (address & 0xFC) + byte

    def read(self, offset: int, data: memoryview) -> None:
        size = len(data)
        if offset == 0 and size == 4:
            with self._lock:
                data[:] = self.address.to_bytes(4, "little")
            return
        if size in (1, 2, 4) and 4 <= offset and offset - 4 + size <= 4:
            target = self._target(offset - 4)
            if target is not None:
                self.segment.config_read(*target, data)
                return
        data[:] = b"\xff" * size

    def write(self, offset: int, data: memoryview) -> None:
        size = len(data)
        # Only dword writes reach CONFIG_ADDRESS; Linux's type-1 probe writes a byte to
        # 0xCFB and expects CONFIG_ADDRESS unchanged.
        if offset == 0 and size == 4:
            with self._lock:
                self.address = int.from_bytes(data, "little") & 0x80FF_FFFC   # bits 30:24, 1:0 reserved
            return
        if size in (1, 2, 4) and 4 <= offset and offset - 4 + size <= 4:
            target = self._target(offset - 4)
            if target is not None:
                self.segment.config_write(*target, data)


class Ecam:
    """This segment's MMCONFIG window (PCIe 4.0 §7.2.2): offset = bus << 20 | device << 15 |
    function << 12 | register. Accesses must be 1, 2 or 4 bytes, naturally aligned."""

    def __init__(self, segment: PciSegment):
        self.segment = segment

    @staticmethod
    def _target(offset: int, size: int) -> tuple[int, int, int, int] | None:
        if size not in (1, 2, 4) or offset < 0 or offset % size:
            return None
        return offset >> 20, (offset >> 15) & 0x1F, (offset >> 12) & 0x7, offset & 0xFFF

    def read(self, offset: int, data: memoryview) -> None:
        target = self._target(offset, len(data))
        if target is None:
            data[:] = b"\xff" * len(data)
        else:
            self.segment.config_read(*target, data)

    def write(self, offset: int, data: memoryview) -> None:
        target = self._target(offset, len(data))
        if target is not None:
            self.segment.config_write(*target, data)
