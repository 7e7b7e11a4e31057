"""Kernel modules of an unpacked linux-image package, in dependency order.

Debian's .deb ships no modules.dep (depmod runs in postinst), so each module's
dependencies are read from the `depends=` string of its ELF `.modinfo` section.
"""

from __future__ import annotations

import gzip
import lzma
import re
import struct
from pathlib import Path

from plugvm.testing.errors import ImageError

_SUFFIX = re.compile(r"^(?P<name>.+)\.ko(?P<comp>\.xz|\.gz|\.zst)?$")


def canonical(name: str) -> str:
    """Module names treat '-' and '_' alike (virtio-rng.ko is module virtio_rng)."""
    return name.replace("-", "_")


def elf_section(image: bytes, wanted: str) -> bytes | None:
    """The bytes of one section of a little-endian ELF64 file, or None if absent."""
    if image[:4] != b"\x7fELF" or image[4] != 2 or image[5] != 1:
        raise ImageError("not a little-endian ELF64 file")
    # ELF64 header: e_shoff at 0x28, e_shentsize/e_shnum/e_shstrndx at 0x3a.
    (shoff,) = struct.unpack_from("<Q", image, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", image, 0x3A)
    if shoff + shnum * shentsize > len(image) or shstrndx >= shnum:
        raise ImageError("ELF section table out of bounds")

    def header(i: int) -> tuple[int, int, int]:
        # Elf64_Shdr: sh_name (u32) ... sh_offset (u64) at 0x18, sh_size (u64) at 0x20.
        base = shoff + i * shentsize
        (name,) = struct.unpack_from("<I", image, base)
        offset, size = struct.unpack_from("<QQ", image, base + 0x18)
        return name, offset, size

    _, stroff, strsize = header(shstrndx)
    names = image[stroff:stroff + strsize]
    for i in range(shnum):
        name, offset, size = header(i)
        end = names.find(b"\0", name)
        if names[name:end].decode() == wanted:
            if offset + size > len(image):
                raise ImageError(f"ELF section {wanted} out of bounds")
            return image[offset:offset + size]
    return None


def modinfo(image: bytes) -> dict[str, str]:
    """The key=value pairs of a module's .modinfo section (last value wins)."""
    section = elf_section(image, ".modinfo") or b""
    info = {}
    for entry in section.split(b"\0"):
        key, sep, value = entry.partition(b"=")
        if sep:
            info[key.decode()] = value.decode(errors="replace")
    return info


class ModuleTree:
    """The modules under lib/modules/<release>/kernel of an unpacked kernel package."""

    def __init__(self, kernel_dir: Path):
        self.files: dict[str, Path] = {}
        for path in sorted(kernel_dir.rglob("*.ko*")):
            m = _SUFFIX.match(path.name)
            if m:
                self.files[canonical(m.group("name"))] = path

    def load(self, name: str) -> bytes:
        """The uncompressed module image (busybox insmod loads plain .ko only)."""
        try:
            path = self.files[canonical(name)]
        except KeyError:
            raise ImageError(f"kernel module {name} is not in this kernel package") from None
        data = path.read_bytes()
        if path.name.endswith(".xz"):
            return lzma.decompress(data)
        if path.name.endswith(".gz"):
            return gzip.decompress(data)
        if path.name.endswith(".zst"):
            raise ImageError(f"{path.name}: zstd-compressed modules are not supported")
        return data

    def depends(self, name: str) -> list[str]:
        value = modinfo(self.load(name)).get("depends", "")
        return [canonical(d) for d in value.split(",") if d]

    def load_order(self, wanted: list[str]) -> list[str]:
        """wanted and everything they depend on, each after its dependencies."""
        order: list[str] = []
        seen: set[str] = set()

        def visit(name: str) -> None:
            name = canonical(name)
            if name in seen:
                return
            seen.add(name)
            for dep in self.depends(name):
                visit(dep)
            order.append(name)

        for name in wanted:
            visit(name)
        return order
