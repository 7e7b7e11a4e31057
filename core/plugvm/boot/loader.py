"""Loading a kernel, initramfs and command line into guest memory.

An ELF vmlinux with a PVH note is entered at that note with %ebx pointing at
hvm_start_info. A bzImage is loaded cloud-hypervisor's way (notes §3h): the protected-mode
kernel at 1 MiB, entered at its 32-bit entry with %esi pointing to the zero page
at 0x7000, the command line at 0x20000, the initramfs at the top of low RAM.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from plugvm import layout
from plugvm.boot import bootparams, bzimage, elf, pvh
from plugvm.boot.bootparams import E820Entry
from plugvm.boot.errors import BootError
from plugvm.memory import GuestMemory, GuestMemoryError

PAGE = 4096


@dataclass(frozen=True)
class EntryPoint:
    """Where and how the boot vCPU starts: 32-bit protected mode, paging off."""

    rip: int
    rsi: int                 # the zero page, for the Linux boot protocol
    rbx: int = 0             # the hvm_start_info, for PVH


def e820_map(memory: GuestMemory) -> list[E820Entry]:
    """RAM as the guest sees it at boot: low RAM below the EBDA, RAM from 1 MiB to the
    32-bit hole, RAM above 4 GiB, and the PCI MMCONFIG window reserved."""
    entries = [E820Entry(0, layout.EBDA_START, bootparams.E820_RAM),
               E820Entry(layout.HIGH_RAM_START, memory.low_end - layout.HIGH_RAM_START, bootparams.E820_RAM)]
    for region in memory.boot_regions[1:]:
        entries.append(E820Entry(region.guest_addr, region.size, bootparams.E820_RAM))
    entries.append(E820Entry(layout.PCI_MMCONFIG_START, layout.PCI_MMCONFIG_SIZE, bootparams.E820_RESERVED))
    return sorted(entries, key=lambda e: e.addr)


def _place_initramfs(memory: GuestMemory, initramfs: bytes, kernel_end: int, addr_max: int) -> int:
    """The highest page-aligned spot below addr_max and the end of low RAM, above the kernel."""
    top = min(memory.low_end, addr_max + 1)
    addr = (top - len(initramfs)) & ~(PAGE - 1)
    if addr < kernel_end:
        raise BootError(f"the {len(initramfs) >> 20} MiB initramfs does not fit in low RAM above the kernel")
    memory.write(addr, initramfs)
    return addr


def _write_cmdline(memory: GuestMemory, cmdline: str, limit: int) -> None:
    encoded = cmdline.encode() + b"\0"
    if len(encoded) > limit:
        raise BootError(f"the kernel command line is {len(encoded) - 1} bytes; this kernel takes at most {limit - 1}")
    memory.write(layout.CMDLINE_START, encoded)


def load_pvh(memory: GuestMemory, kernel: bytes, initramfs: bytes | None, cmdline: str,
             rsdp_addr: int) -> EntryPoint:
    """An ELF vmlinux entered through its PVH note, cloud-hypervisor's first choice."""
    image = elf.parse(kernel)
    kernel_end = 0
    for seg in image.segments:
        try:
            memory.write(seg.paddr, seg.data)
            # The view first: it checks the bounds before a byte of zeros is made.
            _zero(memory.view(seg.paddr + len(seg.data), seg.memsz - len(seg.data)))
        except GuestMemoryError:
            raise BootError(f"kernel segment at {seg.paddr:#x} (+{seg.memsz:#x}) is outside guest RAM") from None
        kernel_end = max(kernel_end, seg.paddr + seg.memsz)
    _write_cmdline(memory, cmdline, layout.CMDLINE_MAX_SIZE)
    initrd = None
    if initramfs:
        initrd = (_place_initramfs(memory, initramfs, kernel_end, 0xFFFFFFFF), len(initramfs))
    for addr, data in pvh.start_info(cmdline_addr=layout.CMDLINE_START, rsdp_addr=rsdp_addr, initrd=initrd,
                                     memmap=e820_map(memory)):
        memory.write(addr, data)
    return EntryPoint(rip=image.entry, rsi=0, rbx=layout.PVH_INFO_START)


def load_bzimage(memory: GuestMemory, kernel: bytes, initramfs: bytes | None, cmdline: str,
                 rsdp_addr: int) -> EntryPoint:
    header = bzimage.parse(kernel)
    payload = memoryview(kernel)[header.kernel_offset:]
    try:
        memory.write(layout.HIGH_RAM_START, payload)
    except GuestMemoryError:
        raise BootError(f"a {len(payload)}-byte kernel does not fit in guest RAM") from None
    if memory.low_end < layout.HIGH_RAM_START + max(header.init_size, len(payload)):
        raise BootError(f"the kernel needs {header.init_size >> 20} MiB to decompress; give the guest more memory")

    _write_cmdline(memory, cmdline, min(layout.CMDLINE_MAX_SIZE, header.cmdline_size + 1 if header.cmdline_size else 256))
    initrd_addr = initrd_size = 0
    if initramfs:
        kernel_end = layout.HIGH_RAM_START + max(header.init_size, len(payload))
        initrd_addr = _place_initramfs(memory, initramfs, kernel_end, header.initrd_addr_max)
        initrd_size = len(initramfs)

    zero_page = bootparams.build(kernel, header, cmdline_addr=layout.CMDLINE_START, initrd_addr=initrd_addr,
                                 initrd_size=initrd_size, e820=e820_map(memory), rsdp_addr=rsdp_addr)
    memory.write(layout.ZERO_PAGE_START, zero_page)
    # The 32-bit entry is at the start of the protected-mode kernel (code32_start, 1 MiB).
    return EntryPoint(rip=layout.HIGH_RAM_START, rsi=layout.ZERO_PAGE_START)


_ZEROS = bytes(1 << 20)


def _zero(view: memoryview) -> None:
    for at in range(0, len(view), len(_ZEROS)):
        chunk = view[at:at + len(_ZEROS)]
        chunk[:] = _ZEROS[:len(chunk)]


def _read_file(path: Path, what: str, limit: int) -> bytes:
    """The whole file, once its size is known to fit the guest (a sparse 64 GiB file
    must not be read into our memory first)."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise BootError(f"the {what} {str(path)!r} is {size} bytes, more than the guest's {limit} bytes of RAM")
        return f.read()


def load_kernel(memory: GuestMemory, kernel_path: Path, initramfs_path: Path | None, cmdline: str,
                rsdp_addr: int) -> EntryPoint:
    kernel = _read_file(kernel_path, "kernel", memory.size)
    initramfs = _read_file(initramfs_path, "initramfs", memory.size) if initramfs_path else None
    if bzimage.is_bzimage(kernel):
        return load_bzimage(memory, kernel, initramfs, cmdline, rsdp_addr)
    if kernel[:4] == elf.ELF_MAGIC:
        return load_pvh(memory, kernel, initramfs, cmdline, rsdp_addr)
    raise BootError(f"{kernel_path} is neither a bzImage nor an ELF kernel")
