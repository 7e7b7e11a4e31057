"""The zero page (struct boot_params, arch/x86/include/uapi/asm/bootparam.h) and its e820 map."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from plugvm.boot import bzimage

ZERO_PAGE_SIZE = 4096
# Offsets within struct boot_params.
ACPI_RSDP_ADDR = 0x070
E820_ENTRIES = 0x1E8
SETUP_HEADER = bzimage.SETUP_HEADER_OFFSET
TYPE_OF_LOADER = 0x210
LOADFLAGS = 0x211
RAMDISK_IMAGE = 0x218
RAMDISK_SIZE = 0x21C
HEAP_END_PTR = 0x224
CMD_LINE_PTR = 0x228
EXT_RAMDISK_IMAGE = 0x0C0
EXT_RAMDISK_SIZE = 0x0C4
EXT_CMD_LINE_PTR = 0x0C8
E820_TABLE = 0x2D0
E820_MAX_ENTRIES = 128        # E820_MAX_ENTRIES_ZEROPAGE

E820_RAM = 1
E820_RESERVED = 2
UNDEFINED_LOADER = 0xFF        # "boot loader not assigned an id"


@dataclass(frozen=True)
class E820Entry:
    addr: int
    size: int
    type: int


def build(image: bytes, header: bzimage.SetupHeader, *, cmdline_addr: int, initrd_addr: int, initrd_size: int,
          e820: list[E820Entry], rsdp_addr: int) -> bytes:
    """The zero page for a bzImage entered at its 32-bit entry point."""
    page = bytearray(ZERO_PAGE_SIZE)
    # The setup header is copied from the image, then the loader's fields filled in.
    page[SETUP_HEADER:header.header_end] = image[SETUP_HEADER:header.header_end]
    page[TYPE_OF_LOADER] = UNDEFINED_LOADER
    page[LOADFLAGS] |= bzimage.CAN_USE_HEAP
    struct.pack_into("<H", page, HEAP_END_PTR, 0xFE00)  # boot.rst: heap_end_ptr relative to the setup start
    struct.pack_into("<I", page, CMD_LINE_PTR, cmdline_addr & 0xFFFFFFFF)
    struct.pack_into("<I", page, EXT_CMD_LINE_PTR, cmdline_addr >> 32)
    struct.pack_into("<I", page, RAMDISK_IMAGE, initrd_addr & 0xFFFFFFFF)
    struct.pack_into("<I", page, EXT_RAMDISK_IMAGE, initrd_addr >> 32)
    struct.pack_into("<I", page, RAMDISK_SIZE, initrd_size & 0xFFFFFFFF)
    struct.pack_into("<I", page, EXT_RAMDISK_SIZE, initrd_size >> 32)
    struct.pack_into("<Q", page, ACPI_RSDP_ADDR, rsdp_addr)
    if len(e820) > E820_MAX_ENTRIES:
        raise ValueError(f"{len(e820)} e820 entries do not fit the zero page")
    page[E820_ENTRIES] = len(e820)
    for i, entry in enumerate(e820):
        struct.pack_into("<QQI", page, E820_TABLE + 20 * i, entry.addr, entry.size, entry.type)
    return bytes(page)
