"""An uncompressed ELF vmlinux from a Debian bzImage, as Kata's kernel is
(`vmlinux.container`, booted through its PVH note): Debian ships no vmlinux outside its
debug packages (hundreds of MiB), but its bzImage carries the whole ELF, compressed,
as its payload (Documentation/arch/x86/boot.rst: payload_offset and payload_length
at 0x248), and a kernel built with CONFIG_PVH keeps the PVH note in it.

The compression is the kernel config's CONFIG_KERNEL_*: gzip and xz are read with the
standard library; LZ4 (Debian's, in the kernel's legacy frame format) and zstd with
Debian's lz4 and zstd programs."""

from __future__ import annotations

import gzip
import lzma
import shutil
import struct
import subprocess
from pathlib import Path

from plugvm.boot import bzimage, elf
from plugvm.boot.errors import BootError

# The payload's first bytes, by format.
MAGICS = {b"\x1f\x8b": "gzip", b"\xfd7zXZ\x00": "xz", b"\x02\x21\x4c\x18": "lz4", b"\x28\xb5\x2f\xfd": "zstd"}
PROGRAMS = {"lz4": ["lz4", "-dc"], "zstd": ["zstd", "-dc"]}


def payload(image: bytes) -> tuple[str, bytes]:
    """(format, compressed bytes) of a bzImage's payload."""
    header = bzimage.parse(image)
    offset, length = struct.unpack_from("<II", image, 0x248)
    start = header.kernel_offset + offset
    if not length or start + length > len(image):
        raise BootError(f"bzImage payload {start:#x}+{length:#x} is not inside the {len(image)}-byte file")
    data = image[start:start + length]
    for magic, kind in MAGICS.items():
        if data.startswith(magic):
            return kind, data
    raise BootError(f"bzImage payload in an unknown format (starts {data[:6].hex()})")


def decompress(kind: str, data: bytes) -> bytes:
    if kind == "gzip":
        return gzip.decompress(data)
    if kind == "xz":
        return lzma.decompress(data)
    program = PROGRAMS[kind]
    if shutil.which(program[0]) is None:
        raise BootError(f"the bzImage's payload is {kind}: install Debian's {program[0]} package to extract it")
    # The kernel's payload_length counts a trailing 4-byte uncompressed size the tools
    # read as garbage after the stream: their complaint is ignored, their output checked.
    done = subprocess.run(program, input=data, capture_output=True, timeout=300)
    if not done.stdout:
        raise BootError(f"{program[0]} could not decompress the bzImage payload: "
                        f"{done.stderr.decode(errors='replace').strip()}")
    return done.stdout


def extract(kernel: Path, out: Path) -> Path:
    """Write the ELF vmlinux inside bzImage `kernel` to `out`; BootError if it is not an
    ELF with a PVH entry note (a kernel built without CONFIG_PVH)."""
    vmlinux = decompress(*payload(kernel.read_bytes()))
    elf.parse(vmlinux)              # an ELF64 with the PVH note and loadable segments, or BootError
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_bytes(vmlinux)
    tmp.replace(out)
    return out
