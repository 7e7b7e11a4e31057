"""The bzImage format: its setup header (Documentation/arch/x86/boot.rst, "THE REAL-MODE
KERNEL HEADER") and where the protected-mode kernel starts in the file."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from plugvm.boot.errors import BootError

HEADER_MAGIC = b"HdrS"
SETUP_HEADER_OFFSET = 0x1F1
MIN_PROTOCOL = 0x20C          # 2.12: 64-bit-capable xloadflags; Debian's kernels are 2.15
LOADED_HIGH = 0x01            # loadflags: protected-mode code goes at 1 MiB
CAN_USE_HEAP = 0x80


@dataclass(frozen=True)
class SetupHeader:
    """The fields of the setup header plugvm reads; offsets are within the file."""

    setup_sects: int
    version: int
    loadflags: int
    code32_start: int
    initrd_addr_max: int
    kernel_alignment: int
    relocatable: bool
    cmdline_size: int
    xloadflags: int
    pref_address: int
    init_size: int
    header_end: int            # file offset just past the header (0x202 + byte at 0x201)

    @property
    def kernel_offset(self) -> int:
        """File offset of the protected-mode kernel: after the boot sector and setup sectors."""
        return (self.setup_sects or 4) * 512 + 512


def is_bzimage(head: bytes) -> bool:
    return len(head) >= 0x206 and head[0x202:0x206] == HEADER_MAGIC


def parse(image: bytes) -> SetupHeader:
    """The setup header of a bzImage; BootError if it is not one plugvm can boot."""
    if not is_bzimage(image):
        raise BootError("not a bzImage (no HdrS signature at 0x202)")
    version = struct.unpack_from("<H", image, 0x206)[0]
    if version < MIN_PROTOCOL:
        raise BootError(f"bzImage boot protocol {version >> 8}.{version & 0xff} is older than 2.12")
    loadflags = image[0x211]
    if not loadflags & LOADED_HIGH:
        raise BootError("zImage (loaded low) kernels are not supported")
    header = SetupHeader(
        setup_sects=image[0x1F1],
        version=version,
        loadflags=loadflags,
        code32_start=struct.unpack_from("<I", image, 0x214)[0],
        initrd_addr_max=struct.unpack_from("<I", image, 0x22C)[0],
        kernel_alignment=struct.unpack_from("<I", image, 0x230)[0],
        relocatable=bool(image[0x234]),
        cmdline_size=struct.unpack_from("<I", image, 0x238)[0],
        xloadflags=struct.unpack_from("<H", image, 0x236)[0],
        pref_address=struct.unpack_from("<Q", image, 0x258)[0],
        init_size=struct.unpack_from("<I", image, 0x260)[0],
        header_end=0x202 + image[0x201],
    )
    if header.kernel_offset >= len(image):
        raise BootError("bzImage has no protected-mode kernel after its setup sectors")
    return header
