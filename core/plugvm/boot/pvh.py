"""The PVH boot ABI (xen/include/public/arch-x86/hvm/start_info.h): hvm_start_info at
0x6000, the initramfs as module 0 at 0x6040, the memory map at 0x7000; entered in
32-bit protected mode with %ebx pointing at hvm_start_info."""

from __future__ import annotations

import struct

from plugvm import layout
from plugvm.boot.bootparams import E820Entry

START_INFO_MAGIC = 0x336EC578
START_INFO_VERSION = 1
# struct hvm_start_info: magic, version, flags, nr_modules, modlist_paddr, cmdline_paddr,
# rsdp_paddr, memmap_paddr, memmap_entries, reserved.
START_INFO = struct.Struct("<IIIIQQQQII")
MODLIST_ENTRY = struct.Struct("<QQQQ")      # paddr, size, cmdline_paddr, reserved
MEMMAP_ENTRY = struct.Struct("<QQII")       # addr, size, type, reserved


def start_info(*, cmdline_addr: int, rsdp_addr: int, initrd: tuple[int, int] | None,
               memmap: list[E820Entry]) -> list[tuple[int, bytes]]:
    """(guest address, bytes) pieces to write for the PVH entry."""
    pieces = []
    nr_modules = 0
    if initrd:
        pieces.append((layout.PVH_MODLIST_START, MODLIST_ENTRY.pack(initrd[0], initrd[1], 0, 0)))
        nr_modules = 1
    table = b"".join(MEMMAP_ENTRY.pack(e.addr, e.size, e.type, 0) for e in memmap)
    pieces.append((layout.ZERO_PAGE_START, table))
    pieces.append((layout.PVH_INFO_START, START_INFO.pack(
        START_INFO_MAGIC, START_INFO_VERSION, 0, nr_modules, layout.PVH_MODLIST_START if initrd else 0,
        cmdline_addr, rsdp_addr, layout.ZERO_PAGE_START, len(memmap), 0)))
    return pieces
