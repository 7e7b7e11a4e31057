"""Boot protocol structures: the setup header, the zero page, e820, and where the loader puts things."""

import struct

import pytest

from plugvm import layout
from plugvm.boot import bootparams, bzimage, loader
from plugvm.boot.cpu_state import gdt_entry
from plugvm.boot.errors import BootError
from plugvm.memory import GuestMemory, GuestMemoryError
from plugvm.testing.tiny_kernel import bzimage as tiny_bzimage

MiB = 1 << 20


@pytest.fixture
def memory():
    mem = GuestMemory(64 * MiB)
    yield mem
    mem.close()


def test_setup_header_of_the_tiny_kernel():
    header = bzimage.parse(tiny_bzimage())
    assert header.version == 0x020F and header.code32_start == 0x100000
    assert header.kernel_offset == 1024 and header.header_end == 0x268
    assert header.cmdline_size == 255 and header.init_size == 0x10000


@pytest.mark.parametrize("mutate, message", [
    (lambda b: b[:0x300], "no protected-mode kernel"),
    (lambda b: b[:0x202] + b"XXXX" + b[0x206:], "not a bzImage"),
    (lambda b: b[:0x206] + struct.pack("<H", 0x0200) + b[0x208:], "older than 2.12"),
    (lambda b: b[:0x211] + b"\0" + b[0x212:], "loaded low"),
])
def test_bad_images_are_refused(mutate, message):
    with pytest.raises(BootError, match=message):
        bzimage.parse(mutate(tiny_bzimage()))


def test_e820_covers_low_and_high_ram_and_reserves_mmconfig(memory):
    e820 = loader.e820_map(memory)
    assert [(e.addr, e.size, e.type) for e in e820] == [
        (0, layout.EBDA_START, bootparams.E820_RAM),
        (MiB, 63 * MiB, bootparams.E820_RAM),
        (layout.PCI_MMCONFIG_START, layout.PCI_MMCONFIG_SIZE, bootparams.E820_RESERVED)]


def test_memory_above_the_hole_starts_at_4g():
    mem = GuestMemory(layout.MEM_32BIT_RESERVED_START + 2 * MiB)
    try:
        assert [(r.guest_addr, r.size) for r in mem.regions] == [
            (0, layout.MEM_32BIT_RESERVED_START), (layout.RAM_64BIT_START, 2 * MiB)]
        ram = [e for e in loader.e820_map(mem) if e.type == bootparams.E820_RAM]
        assert ram[-1].addr == layout.RAM_64BIT_START and ram[-1].size == 2 * MiB
    finally:
        mem.close()


def test_loader_places_kernel_cmdline_initrd_and_zero_page(memory):
    image = tiny_bzimage()
    initrd = b"I" * 10000
    entry = loader.load_bzimage(memory, image, initrd, "console=ttyS0", rsdp_addr=layout.RSDP_POINTER)
    assert entry.rip == 0x100000 and entry.rsi == layout.ZERO_PAGE_START
    assert memory.read(0x100000, 4) == image[1024:1028]
    assert memory.read(layout.CMDLINE_START, 14) == b"console=ttyS0\0"
    zp = memory.read(layout.ZERO_PAGE_START, 4096)
    assert zp[0x202:0x206] == b"HdrS" and zp[bootparams.TYPE_OF_LOADER] == 0xFF
    assert zp[bootparams.LOADFLAGS] & bzimage.CAN_USE_HEAP
    (cmd_ptr,) = struct.unpack_from("<I", zp, bootparams.CMD_LINE_PTR)
    (rd_addr, rd_size) = struct.unpack_from("<II", zp, bootparams.RAMDISK_IMAGE)
    (rsdp,) = struct.unpack_from("<Q", zp, bootparams.ACPI_RSDP_ADDR)
    assert cmd_ptr == layout.CMDLINE_START and rsdp == layout.RSDP_POINTER
    assert rd_size == len(initrd) and rd_addr % 4096 == 0 and rd_addr + rd_size <= 64 * MiB
    assert 64 * MiB - (rd_addr + rd_size) < 4096        # at the top of low RAM
    assert memory.read(rd_addr, 10) == b"I" * 10
    assert zp[bootparams.E820_ENTRIES] == 3
    assert struct.unpack_from("<QQI", zp, bootparams.E820_TABLE + 20) == (MiB, 63 * MiB, 1)


def test_loader_refuses_what_does_not_fit(memory):
    with pytest.raises(BootError, match="command line"):
        loader.load_bzimage(memory, tiny_bzimage(), None, "x" * 300, layout.RSDP_POINTER)
    with pytest.raises(BootError, match="initramfs"):
        loader.load_bzimage(memory, tiny_bzimage(), b"\0" * (64 * MiB), "", layout.RSDP_POINTER)


def test_guest_memory_access_is_checked(memory):
    memory.write(0x1000, b"abc")
    assert memory.read(0x1000, 3) == b"abc"
    for addr, length in [(64 * MiB - 1, 2), (-1, 1), (64 * MiB, 1), (layout.RAM_64BIT_START, 1)]:
        with pytest.raises(GuestMemoryError):
            memory.view(addr, length)


def test_gdt_entries_match_the_flat_segments():
    # Code: base 0, limit 0xfffff, G=1 D=1 P=1 S=1 type=0xb (SDM 3.4.5).
    assert gdt_entry(0xC09B, 0, 0xFFFFF) == 0x00CF9B000000FFFF
    assert gdt_entry(0xC093, 0, 0xFFFFF) == 0x00CF93000000FFFF
    assert gdt_entry(0x008B, 0, 0xFFFFF) == 0x000F8B000000FFFF


def test_pvh_elf_is_loaded_with_hvm_start_info(memory):
    from plugvm.boot import pvh
    from plugvm.testing.tiny_kernel import pvh_elf, pvh_code
    entry = loader.load_pvh(memory, pvh_elf(), b"R" * 5000, "pvh cmdline", rsdp_addr=layout.RSDP_POINTER)
    assert (entry.rip, entry.rbx) == (0x100000, layout.PVH_INFO_START)
    assert memory.read(0x100000, len(pvh_code())) == pvh_code()
    magic, version, _, nr_modules, modlist, cmdline, rsdp, memmap, entries, _ = pvh.START_INFO.unpack(
        memory.read(layout.PVH_INFO_START, pvh.START_INFO.size))
    assert (magic, version, nr_modules) == (0x336EC578, 1, 1)
    assert (cmdline, rsdp, memmap, entries) == (layout.CMDLINE_START, layout.RSDP_POINTER, layout.ZERO_PAGE_START, 3)
    assert memory.read(cmdline, 12) == b"pvh cmdline\0"
    paddr, size, _, _ = pvh.MODLIST_ENTRY.unpack(memory.read(modlist, pvh.MODLIST_ENTRY.size))
    assert size == 5000 and memory.read(paddr, 5) == b"RRRRR"
    assert pvh.MEMMAP_ENTRY.unpack(memory.read(memmap + 24, 24))[:3] == (MiB, 63 * MiB, 1)


def test_elf_without_pvh_note_is_refused(memory):
    from plugvm.testing.tiny_kernel import pvh_elf
    image = bytearray(pvh_elf())
    image[0x100 + 49 + 8] = 17       # the note's type: no longer XEN_ELFNOTE_PHYS32_ENTRY
    with pytest.raises(BootError, match="PVH"):
        loader.load_pvh(memory, bytes(image), None, "", layout.RSDP_POINTER)
