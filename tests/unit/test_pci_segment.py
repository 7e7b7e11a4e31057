"""PCI segment 0: config access through 0xCF8/0xCFC and ECAM, BAR sizing as Linux
probes it, capabilities, slot and window allocation, MSI-X masking; hostile accesses
never raise."""

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugvm.pci.allocator import AddressAllocator, AllocationError
from plugvm.pci.config_space import PciConfigSpace
from plugvm.pci.msix import Msix, MsixEntry
from plugvm.pci.segment import PciSegment, SlotError

GiB = 1 << 30


class Function:
    def __init__(self, bar_64bit=False, addr=0xC000_0000):
        self.config = PciConfigSpace(vendor_id=0x1AF4, device_id=0x1042, class_code=0x01, subclass=0x80)
        self.config.add_bar(0, 512 << 10, is_64bit=bar_64bit, prefetchable=False, addr=addr)


@pytest.fixture
def segment():
    return PciSegment(0, mem64_start=8 * GiB, mem64_size=64 * GiB)


def cf8_read(segment, slot, register, size=4):
    segment.config_io.write(0, memoryview(bytearray(struct.pack("<I", 1 << 31 | slot << 11 | register & 0xFC))))
    data = memoryview(bytearray(size))
    segment.config_io.read(4 + (register & 3), data)
    return int.from_bytes(data, "little")


def ecam(segment, slot, register, size=4, value=None, function=0, bus=0):
    offset = bus << 20 | slot << 15 | function << 12 | register
    data = memoryview(bytearray(size if value is None else value.to_bytes(size, "little")))
    if value is None:
        segment.ecam.read(offset, data)
        return int.from_bytes(data, "little")
    segment.ecam.write(offset, data)


def test_host_bridge_and_empty_slots(segment):
    assert cf8_read(segment, 0, 0) == 0x0D57_8086
    assert ecam(segment, 0, 0) == 0x0D57_8086
    assert cf8_read(segment, 5, 0) == 0xFFFF_FFFF
    assert ecam(segment, 0, 0, function=1) == 0xFFFF_FFFF and ecam(segment, 0, 0, bus=1) == 0xFFFF_FFFF
    assert cf8_read(segment, 0, 0x0A, 2) == 0x0600                   # class: host bridge


@pytest.mark.parametrize("bar_64bit, addr", [(False, 0xC080_0000), (True, 0x2_0000_0000)])
def test_bar_sizing_probe_as_linux_does_it(segment, bar_64bit, addr):
    segment.attach(1, Function(bar_64bit, addr))
    registers = (0x10, 0x14) if bar_64bit else (0x10,)
    original = [ecam(segment, 1, r) for r in registers]
    for r in registers:
        ecam(segment, 1, r, value=0xFFFF_FFFF)
    sized = [ecam(segment, 1, r) for r in registers]
    for r, value in zip(registers, original):
        ecam(segment, 1, r, value=value)
    assert sized[0] & ~0xF == 0xFFF8_0000                             # 512 KiB
    assert sized[0] & 0x6 == (0x4 if bar_64bit else 0)
    if bar_64bit:
        assert sized[1] == 0xFFFF_FFFF
    assert [ecam(segment, 1, r) for r in registers] == original
    assert segment.devices[1].config.bar_address(0) == addr


def test_read_only_registers_ignore_writes(segment):
    segment.attach(1, Function())
    ecam(segment, 1, 0, value=0x1234_5678)
    assert ecam(segment, 1, 0) == 0x1042_1AF4
    ecam(segment, 1, 4, 2, value=0xFFFF)
    assert ecam(segment, 1, 4, 2) == 0x0507                           # io, mem, master, serr, intx-disable


def test_capability_chain(segment):
    function = Function()
    first = function.config.add_capability(0x09, bytes(14))
    second = function.config.add_capability(0x11, bytes(10))
    segment.attach(1, function)
    assert ecam(segment, 1, 0x06, 2) & 0x10
    assert ecam(segment, 1, 0x34, 1) == first
    assert ecam(segment, 1, first, 2) == 0x09 | second << 8
    assert ecam(segment, 1, second, 2) == 0x11


def test_slots_explicit_first_lowest_free_and_freed(segment):
    assert segment.allocate_slot(3) == 3
    assert [segment.allocate_slot() for _ in range(3)] == [1, 2, 4]
    segment.free_slot(2)
    assert segment.allocate_slot() == 2
    with pytest.raises(SlotError, match="already in use"):
        segment.allocate_slot(3)
    with pytest.raises(SlotError, match="does not exist"):
        segment.allocate_slot(32)
    while True:
        try:
            segment.allocate_slot()
        except SlotError as e:
            assert "all 31 PCI slots" in str(e)
            break


def test_allocator_alignment_exhaustion_and_free():
    window = AddressAllocator(0xC000_0000, 32 << 20)
    a = window.allocate(512 << 10, 8 << 20)
    b = window.allocate(512 << 10, 8 << 20)
    assert (a, b) == (0xC000_0000, 0xC080_0000)
    window.allocate(512 << 10, 8 << 20)
    window.allocate(512 << 10, 8 << 20)
    with pytest.raises(AllocationError):
        window.allocate(512 << 10, 8 << 20)
    window.free(b)
    assert window.allocate(512 << 10, 8 << 20) == b
    with pytest.raises(AllocationError):
        window.allocate(4096, 4096, at=a)


def test_msix_routes_masks_and_delivers_pending_at_unmask():
    changes, pending = [], []
    msix = Msix(3, table_bar=0, table_offset=0x8000, pba_bar=0, pba_offset=0x48000,
                on_change=lambda v, e: changes.append((v, e)), on_pending=pending.append)
    config = PciConfigSpace(vendor_id=1, device_id=2, class_code=0xFF)
    cap = msix.attach(config)

    def table(offset, value):
        msix.table_write(offset, memoryview(bytearray(struct.pack("<I", value))))

    table(0, 0xFEE0_0000)
    table(8, 0x41)
    table(12, 0)                                  # unmasked, but MSI-X is still off
    assert changes == [] and not msix.signal(0)   # → pending
    config.write(cap + 2, memoryview(bytearray(struct.pack("<H", 0x8000))))
    assert changes == [(0, MsixEntry(0xFEE0_0000, 0x41))] and pending == [0]
    assert msix.signal(0)
    table(12, 1)                                  # mask vector 0
    assert changes[-1] == (0, None) and not msix.signal(0)
    data = memoryview(bytearray(8))
    msix.pba_read(0, data)
    assert data[0] == 1
    table(12, 0)
    assert pending == [0, 0]


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(-8, 1 << 21), st.sampled_from([1, 2, 3, 4, 8, 16]),
                          st.integers(0, 2**64 - 1)), max_size=40))
def test_hostile_config_and_msix_accesses_never_raise(accesses):
    segment = PciSegment(0, mem64_start=8 * GiB, mem64_size=64 * GiB)
    function = Function()
    msix = Msix(4, table_bar=0, table_offset=0x8000, pba_bar=0, pba_offset=0x48000,
                on_change=lambda v, e: None, on_pending=lambda v: None)
    msix.attach(function.config)
    segment.attach(1, function)
    for is_write, offset, size, value in accesses:
        data = memoryview(bytearray((value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")))
        for target in (segment.ecam, segment.config_io):
            (target.write if is_write else target.read)(offset, data)
        (msix.table_write if is_write else msix.table_read)(offset, data)
        msix.pba_read(offset, data)
    assert ecam(segment, 1, 0) == 0x1042_1AF4
