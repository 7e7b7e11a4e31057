"""ELF vmlinux with a PVH entry note: its loadable segments and XEN_ELFNOTE_PHYS32_ENTRY
(xen/include/public/elfnote.h; the note Linux emits with CONFIG_PVH)."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from plugvm.boot.errors import BootError

ELF_MAGIC = b"\x7fELF"
PT_LOAD, PT_NOTE = 1, 4
XEN_ELFNOTE_PHYS32_ENTRY = 18


@dataclass(frozen=True)
class Segment:
    paddr: int
    data: bytes        # the file's bytes (p_filesz)
    memsz: int         # the rest up to p_memsz is zeroed


@dataclass(frozen=True)
class PvhKernel:
    entry: int
    segments: tuple[Segment, ...]


def _notes(blob: bytes):
    pos = 0
    while pos + 12 <= len(blob):
        namesz, descsz, kind = struct.unpack_from("<III", blob, pos)
        name_start = pos + 12
        desc_start = name_start + ((namesz + 3) & ~3)
        end = desc_start + ((descsz + 3) & ~3)
        if end > len(blob):
            return
        yield blob[name_start:name_start + namesz].rstrip(b"\0"), kind, blob[desc_start:desc_start + descsz]
        pos = end


def parse(image: bytes) -> PvhKernel:
    """The PVH entry and the PT_LOAD segments of an ELF64 x86-64 kernel."""
    if image[:4] != ELF_MAGIC:
        raise BootError("not an ELF file")
    if len(image) < 64:
        raise BootError(f"ELF header truncated: the file is {len(image)} bytes, the header 64")
    if image[4] != 2 or image[5] != 1:
        raise BootError("only little-endian ELF64 kernels are supported")
    phoff, = struct.unpack_from("<Q", image, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", image, 0x36)
    if phentsize < 56 or phoff + phnum * phentsize > len(image):
        raise BootError("ELF program headers out of bounds")
    segments, entry = [], None
    for i in range(phnum):
        p_type, _, p_offset, _, p_paddr, p_filesz, p_memsz = struct.unpack_from("<IIQQQQQ", image,
                                                                             phoff + i * phentsize)
        if p_offset + p_filesz > len(image) or p_filesz > p_memsz and p_type == PT_LOAD:
            raise BootError(f"ELF segment {i} out of bounds")
        blob = image[p_offset:p_offset + p_filesz]
        if p_type == PT_LOAD:
            segments.append(Segment(p_paddr, blob, p_memsz))
        elif p_type == PT_NOTE:
            for name, kind, desc in _notes(blob):
                if name == b"Xen" and kind == XEN_ELFNOTE_PHYS32_ENTRY and len(desc) >= 4:
                    entry = struct.unpack_from("<I", desc)[0]
    if entry is None:
        raise BootError("ELF kernel has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); use a bzImage")
    if not segments:
        raise BootError("ELF kernel has no loadable segments")
    return PvhKernel(entry, tuple(segments))
