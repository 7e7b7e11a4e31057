"""plugvm.pci without KVM: BAR sizing as Linux probes it, the capability chain,
command/status masks, CF8/CFC and ECAM decoding, slot and window allocation,
MSI-X routing/masking/pending, and guest accesses that never raise."""

import struct
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugvm.errors import PlugvmError
from plugvm.pci.allocator import AddressAllocator, AllocationError
from plugvm.pci.config_space import PciConfigError, PciConfigSpace
from plugvm.pci.msix import Msix, MsixEntry, MsixLayoutError
from plugvm.pci.segment import PciSegment, SlotError

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


class Function:
    def __init__(self, *, bar_64bit=False, addr=0xC000_0000, size=512 * KiB, prefetchable=False):
        self.moves = []
        self.config = PciConfigSpace(vendor_id=0x1AF4, device_id=0x1042, class_code=0x01, subclass=0x80,
                                     on_bar_moved=lambda *move: self.moves.append(move))
        self.config.add_bar(0, size, is_64bit=bar_64bit, prefetchable=prefetchable, addr=addr)


def view(size, value=0):
    return memoryview(bytearray(value.to_bytes(size, "little")))


def cfg_read(config, offset, size=4):
    data = view(size)
    config.read(offset, data)
    return int.from_bytes(data, "little")


def cfg_write(config, offset, value, size=4):
    config.write(offset, view(size, value))


@pytest.fixture
def segment():
    return PciSegment(0, mem64_start=8 * GiB, mem64_size=64 * GiB)


def cf8(segment, slot, register, size=4, value=None, function=0, bus=0):
    """Configuration mechanism #1, as Linux's pci_conf1_read/write do it."""
    address = 1 << 31 | bus << 16 | slot << 11 | function << 8 | register & 0xFC
    segment.config_io.write(0, view(4, address))
    data = view(size, value or 0)
    if value is None:
        segment.config_io.read(4 + (register & 3), data)
        return int.from_bytes(data, "little")
    segment.config_io.write(4 + (register & 3), data)


def ecam(segment, slot, register, size=4, value=None, function=0, bus=0):
    offset = bus << 20 | slot << 15 | function << 12 | register
    data = view(size, value or 0)
    if value is None:
        segment.ecam.read(offset, data)
        return int.from_bytes(data, "little")
    segment.ecam.write(offset, data)


# --- BARs -----------------------------------------------------------------------------------

def size_bar(config, registers):
    """Linux's __pci_read_base: per register, save, write ~0, read back, restore."""
    sized = []
    for r in registers:
        original = cfg_read(config, r)
        cfg_write(config, r, 0xFFFF_FFFF)
        sized.append(cfg_read(config, r))
        cfg_write(config, r, original)
    return sized


@pytest.mark.parametrize("bar_64bit, addr", [(False, 0xC080_0000), (True, 0x2_0000_0000)])
def test_bar_sizing_probe_reads_the_mask_and_restores_the_address(bar_64bit, addr):
    function = Function(bar_64bit=bar_64bit, addr=addr)
    config = function.config
    registers = (0x10, 0x14) if bar_64bit else (0x10,)
    before = [cfg_read(config, r) for r in registers]
    sized = size_bar(config, registers)
    assert sized[0] == 0xFFF8_0000 | (0x4 if bar_64bit else 0)       # 512 KiB, memory, type
    if bar_64bit:
        assert sized[1] == 0xFFFF_FFFF
        assert before == [addr & 0xFFFF_FFFF | 0x4, addr >> 32]
    assert [cfg_read(config, r) for r in registers] == before
    assert config.bar_address(0) == addr
    assert function.moves == []


def test_large_64bit_prefetchable_bar_sizes_across_both_registers():
    config = Function(bar_64bit=True, addr=16 * GiB, size=8 * GiB, prefetchable=True).config
    assert size_bar(config, (0x10, 0x14)) == [0x0000_000C, 0xFFFF_FFFE]   # 8 GiB, 64-bit, prefetchable
    assert config.bar_address(0) == 16 * GiB


def test_unimplemented_bars_and_rom_read_zero_after_probe():
    config = Function().config
    assert size_bar(config, (0x14, 0x18, 0x1C, 0x20, 0x24, 0x30)) == [0] * 6


def test_bar_probe_with_byte_writes_and_the_sub_size_bits_hardwired():
    config = Function().config
    for i in range(4):
        cfg_write(config, 0x10 + i, 0xFF, size=1)
    assert cfg_read(config, 0x10) == 0xFFF8_0000
    cfg_write(config, 0x10, 0xC001_2345)                                # not size-aligned
    assert cfg_read(config, 0x10) == 0xC000_0000


def test_relocation_is_reported_once_settled_and_never_during_sizing():
    function = Function(bar_64bit=True, addr=0x2_0000_0000)
    config = function.config
    cfg_write(config, 0x04, 0x0006, size=2)                             # memory decode + bus master on
    size_bar(config, (0x10, 0x14))                                      # a probe with decode on
    assert function.moves == []
    # Linux moves a 64-bit BAR with decode off: no half-written address is reported.
    cfg_write(config, 0x04, 0x0004, size=2)
    cfg_write(config, 0x10, 0x0080_0000)
    cfg_write(config, 0x14, 0x3)
    assert function.moves == [] and config.bar_address(0) == 0x3_0080_0000
    cfg_write(config, 0x04, 0x0006, size=2)
    assert function.moves == [(0, 0x2_0000_0000, 0x3_0080_0000)]


def test_add_bar_rejects_bad_layouts():
    config = PciConfigSpace(vendor_id=1, device_id=2, class_code=0xFF)
    config.add_bar(4, 4 * KiB, is_64bit=True, prefetchable=False, addr=0)
    for index, size, is_64bit, addr in ((5, 4 * KiB, True, 0), (0, 3000, False, 0), (0, 4 * KiB, False, 0x800),
                                        (0, 4 * KiB, False, 8 * GiB), (5, 4 * KiB, False, 0)):
        with pytest.raises(PciConfigError):
            config.add_bar(index, size, is_64bit=is_64bit, prefetchable=False, addr=addr)


# --- header registers and capabilities --------------------------------------------------------

def test_read_only_ids_command_mask_and_status_write_one_to_clear():
    config = Function().config
    cfg_write(config, 0x00, 0x1234_5678)
    cfg_write(config, 0x08, 0xFFFF_FFFF)                                # revision/class
    assert cfg_read(config, 0x00) == 0x1042_1AF4 and cfg_read(config, 0x08) == 0x0180_0000
    cfg_write(config, 0x04, 0xFFFF, size=2)
    assert cfg_read(config, 0x04, 2) == 0x0507                          # io, mem, master, serr, intx-disable
    config.data[0x06] |= 0x20                                            # 66 MHz capable (RO)
    config.data[0x07] |= 0x80 | 0x20                                     # parity error, master abort (RW1C)
    cfg_write(config, 0x04, 0x0000_0006)                                 # dword write, status half zero
    assert cfg_read(config, 0x06, 2) == 0xA020
    cfg_write(config, 0x06, 0x8000, size=2)                              # clears only the bit written
    assert cfg_read(config, 0x06, 2) == 0x2020
    cfg_write(config, 0x06, 0xFFFF, size=2)
    assert cfg_read(config, 0x06, 2) == 0x0020
    cfg_write(config, 0x3C, 0x0B, size=1)
    assert cfg_read(config, 0x3C, 1) == 0x0B


def test_capability_chain_walks_like_linux():
    config = PciConfigSpace(vendor_id=1, device_id=2, class_code=0xFF)
    assert not cfg_read(config, 0x06, 2) & 0x10
    offsets = [config.add_capability(cap_id, bytes(n)) for cap_id, n in ((0x09, 14), (0x11, 10), (0x09, 3))]
    assert cfg_read(config, 0x06, 2) & 0x10
    walked, pointer = [], cfg_read(config, 0x34, 1)
    while pointer:
        assert pointer % 4 == 0 and pointer >= 0x40
        walked.append((pointer, cfg_read(config, pointer, 1)))
        pointer = cfg_read(config, pointer + 1, 1)
    assert walked == list(zip(offsets, (0x09, 0x11, 0x09)))
    with pytest.raises(PciConfigError):
        config.add_capability(0x09, bytes(200))


def test_capability_writes_respect_mask_and_reach_the_handler():
    config = PciConfigSpace(vendor_id=1, device_id=2, class_code=0xFF)
    seen = []
    cap = config.add_capability(0x09, b"\x00\x00\xAA", on_write=lambda off, body: seen.append((off, body)),
                                writable=b"\x0F\x00")
    cfg_write(config, cap, 0xFFFF_FFFF)
    assert cfg_read(config, cap) == 0x000F_0009 and cfg_read(config, cap + 4, 1) == 0xAA and seen == [(0, b"\x09\x00\x0F\x00\xAA")]


# --- config access through CF8/CFC and ECAM ---------------------------------------------------

def test_host_bridge_and_empty_slots_through_cf8_and_ecam(segment):
    for read in (cf8, ecam):
        assert read(segment, 0, 0x00) == 0x0D57_8086
        assert read(segment, 0, 0x0A, 2) == 0x0600                       # host bridge class
        assert read(segment, 0, 0x02, 2) == 0x0D57
        assert read(segment, 0, 0x03, 1) == 0x0D
        assert read(segment, 7, 0x00) == 0xFFFF_FFFF                     # empty slot
        assert read(segment, 0, 0x00, function=1) == 0xFFFF_FFFF
        assert read(segment, 0, 0x00, bus=1) == 0xFFFF_FFFF


def test_cf8_address_register_and_disabled_cycles(segment):
    segment.config_io.write(0, view(4, 0x8000_0000))
    data = view(4)
    segment.config_io.read(0, data)
    assert int.from_bytes(data, "little") == 0x8000_0000
    segment.config_io.write(3, view(1, 0x01))                            # Linux's type-1 probe: ignored
    segment.config_io.read(0, data)
    assert int.from_bytes(data, "little") == 0x8000_0000
    segment.config_io.write(0, view(4, 0x0000_0000))                     # enable bit clear
    segment.config_io.read(4, data)
    assert bytes(data) == b"\xff" * 4


def test_config_writes_reach_the_device_through_both_paths(segment):
    segment.attach(3, Function())
    cf8(segment, 3, 0x04, 2, value=0x0002)
    assert ecam(segment, 3, 0x04, 2) == 0x0002
    ecam(segment, 3, 0x3C, 1, value=0x0A)
    assert cf8(segment, 3, 0x3C, 1) == 0x0A
    assert ecam(segment, 3, 0x01, 2) == 0xFFFF                           # unaligned ECAM access


def test_ecam_base_per_segment():
    assert PciSegment(0, mem64_start=8 * GiB, mem64_size=GiB).ecam_base == 0xE800_0000
    assert PciSegment(2, mem64_start=8 * GiB, mem64_size=GiB).ecam_base == 0xE820_0000


# --- slots ----------------------------------------------------------------------------------

def test_slots_explicit_first_then_lowest_free_and_freed_slots_reused(segment):
    assert segment.allocate_slot(3) == 3
    assert [segment.allocate_slot() for _ in range(3)] == [1, 2, 4]
    segment.attach(2, Function())
    segment.free_slot(2)
    assert 2 not in segment.devices and segment.allocate_slot() == 2
    with pytest.raises(SlotError, match="already in use"):
        segment.allocate_slot(3)
    for bad in (0, 32, -1):
        with pytest.raises(SlotError, match="does not exist"):
            segment.allocate_slot(bad)
    assert [segment.allocate_slot() for _ in range(27)] == list(range(5, 32))
    with pytest.raises(SlotError, match="all 31 PCI slots"):
        segment.allocate_slot()


def test_attach_rejects_occupied_and_host_bridge_slots(segment):
    slot = segment.allocate_slot()
    segment.attach(slot, Function())
    with pytest.raises(SlotError):
        segment.attach(slot, Function())
    with pytest.raises(SlotError):
        segment.attach(0, Function())
    segment.detach(slot)
    assert ecam(segment, slot, 0) == 0xFFFF_FFFF
    assert segment.allocate_slot() == slot + 1                           # detach keeps the slot reserved


def test_other_segments_have_no_host_bridge():
    segment = PciSegment(1, mem64_start=8 * GiB, mem64_size=GiB)
    assert ecam(segment, 0, 0) == 0xFFFF_FFFF and segment.allocate_slot() == 0


def test_concurrent_slot_allocation_hands_out_each_slot_once(segment):
    got, barrier = [], threading.Barrier(8)

    def worker():
        barrier.wait()
        for _ in range(3):
            got.append(segment.allocate_slot())

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(1, 25))


def test_windows(segment):
    assert (segment.mem32.base, segment.mem32.size) == (0xC000_0000, 640 * MiB)
    assert (segment.mem64.base, segment.mem64.size) == (8 * GiB, 64 * GiB)


# --- the address allocator --------------------------------------------------------------------

def test_allocator_alignment_exhaustion_free_and_fixed_addresses():
    window = AddressAllocator(0xC000_0000, 32 * MiB)
    a = window.allocate(512 * KiB, 8 * MiB)
    small = window.allocate(4 * KiB, 4 * KiB)                             # fills the gap after a
    b, c, d = (window.allocate(512 * KiB, 8 * MiB) for _ in range(3))
    assert (a, small, b, c, d) == (0xC000_0000, 0xC008_0000, 0xC080_0000, 0xC100_0000, 0xC180_0000)
    with pytest.raises(AllocationError):
        window.allocate(512 * KiB, 8 * MiB)
    window.free(c)
    window.free(c)                                                        # twice: ignored
    assert window.allocate(512 * KiB, 8 * MiB) == c
    with pytest.raises(AllocationError):
        window.allocate(4 * KiB, 4 * KiB, at=a + 4 * KiB)                 # overlaps a
    with pytest.raises(AllocationError):
        window.allocate(4 * KiB, 8 * KiB, at=0xC010_1000)                 # misaligned
    with pytest.raises(AllocationError):
        window.allocate(8 * KiB, 4 * KiB, at=0xC1FF_F000)                 # runs past the end
    assert window.allocate(4 * KiB, 4 * KiB, at=0xC1FF_F000) == 0xC1FF_F000
    with pytest.raises(AllocationError):
        window.allocate(4 * KiB, 3000)
    assert window.allocations()[0] == (a, 512 * KiB) and len(window.allocations()) == 6
    assert issubclass(AllocationError, PlugvmError)


def test_allocator_unaligned_base_rounds_up():
    window = AddressAllocator(0x1000, 0x10_0000)
    assert window.allocate(0x1000, 0x1_0000) == 0x1_0000
    with pytest.raises(AllocationError):
        window.allocate(0x20_0000, 0x1000)


# --- MSI-X ----------------------------------------------------------------------------------

class MsixHarness:
    def __init__(self, vectors=3):
        self.changes, self.pending = [], []
        self.msix = Msix(vectors, table_bar=0, table_offset=0x8000, pba_bar=0, pba_offset=0x48000,
                         on_change=lambda v, e: self.changes.append((v, e)), on_pending=self.pending.append)
        self.config = PciConfigSpace(vendor_id=1, device_id=2, class_code=0xFF)
        self.cap = self.msix.attach(self.config)

    def table(self, offset, value, size=4):
        self.msix.table_write(offset, view(size, value))

    def control(self, value):
        cfg_write(self.config, self.cap + 2, value, size=2)

    def pba(self):
        data = view(8)
        self.msix.pba_read(0, data)
        return int.from_bytes(data, "little")


def test_msix_capability_body():
    h = MsixHarness(vectors=3)
    assert cfg_read(h.config, h.cap) == 0x0002_0011                      # id, next 0, table size N-1
    assert cfg_read(h.config, h.cap + 4) == 0x8000 and cfg_read(h.config, h.cap + 8) == 0x48000
    h.control(0xFFFF)
    assert cfg_read(h.config, h.cap + 2, 2) == 0xC002                    # only enable and mask stick
    assert h.msix.enabled and h.msix.function_masked


def test_msix_routes_on_enable_and_table_writes():
    h = MsixHarness()
    h.table(0, 0xFEE0_0000)
    h.table(8, 0x41)
    h.table(12, 0)
    assert h.changes == [] and not h.msix.signal(0)                     # MSI-X still off → pending
    h.control(0x8000)
    assert h.changes == [(0, MsixEntry(0xFEE0_0000, 0x41))] and h.pending == [0]
    assert h.msix.signal(0) and h.pba() == 0
    h.table(8, 0x42)                                                     # retarget while live
    assert h.changes[-1] == (0, MsixEntry(0xFEE0_0000, 0x42))
    h.table(16, 0x1_FEE0_1000 << 0, size=8)                              # vector 1: 8-byte address write
    h.table(24, 0x51)                                                    # data, vector still masked
    assert len(h.changes) == 2
    h.table(24, 0x51, size=8)                                            # data + control (unmasked) at once
    assert h.changes[-1] == (1, MsixEntry(0x1_FEE0_1000, 0x51))


def test_msix_masking_sets_pending_and_unmask_delivers_it():
    h = MsixHarness()
    h.table(0, 0xFEE0_0000)
    h.table(12, 0)
    h.control(0x8000)
    h.table(12, 1)                                                       # mask vector 0
    assert h.changes[-1] == (0, None) and not h.msix.signal(0) and h.pba() == 1
    assert h.msix.masked(0)
    h.table(12, 0)
    assert h.pending == [0] and h.pba() == 0 and h.changes[-1][1] is not None
    h.control(0xC000)                                                    # function mask
    assert h.changes[-1] == (0, None) and not h.msix.signal(0) and h.pba() == 1
    h.control(0x8000)
    assert h.pending == [0, 0] and h.pba() == 0
    h.control(0x0000)                                                    # disabled: nothing is live
    assert h.changes[-1] == (0, None)


def test_msix_vector_control_reserved_bits_and_masked_reset_state():
    h = MsixHarness()
    data = view(4)
    h.msix.table_read(12, data)
    assert int.from_bytes(data, "little") == 1                           # masked at reset
    h.table(12, 0xFFFF_FFFE)
    h.msix.table_read(12, data)
    assert int.from_bytes(data, "little") == 0


def test_msix_bad_layout_and_out_of_range_signal():
    with pytest.raises(MsixLayoutError):
        Msix(0, table_bar=0, table_offset=0, pba_bar=0, pba_offset=8)
    with pytest.raises(MsixLayoutError):
        Msix(4, table_bar=0, table_offset=4, pba_bar=0, pba_offset=8)
    h = MsixHarness()
    assert not h.msix.signal(3) and not h.msix.signal(-1) and h.pba() == 0


# --- hostile guests ---------------------------------------------------------------------------

accesses = st.lists(st.tuples(st.booleans(), st.integers(-16, 1 << 21), st.sampled_from([0, 1, 2, 3, 4, 8, 16]),
                              st.integers(0, 2**128 - 1)), max_size=40)


@settings(max_examples=1000, deadline=None)
@given(accesses)
def test_hostile_accesses_never_raise(ops):
    segment = PciSegment(0, mem64_start=8 * GiB, mem64_size=64 * GiB)
    function = Function(bar_64bit=True, addr=8 * GiB)
    msix = Msix(4, table_bar=0, table_offset=0x8000, pba_bar=0, pba_offset=0x48000)
    msix.attach(function.config)
    segment.attach(1, function)
    for is_write, offset, size, value in ops:
        data = memoryview(bytearray((value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")))
        for target in (segment.ecam, segment.config_io, function.config):
            (target.write if is_write else target.read)(offset, data)
        (msix.table_write if is_write else msix.table_read)(offset, data)
        (msix.pba_write if is_write else msix.pba_read)(offset, data)
        msix.signal(offset)
    assert ecam(segment, 1, 0) == 0x1042_1AF4 and ecam(segment, 0, 0) == 0x0D57_8086
