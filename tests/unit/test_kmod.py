"""Reading module dependencies from an ELF .modinfo section, and the load order they give."""

import struct

import pytest

from plugvm.testing import kmod
from plugvm.testing.errors import ImageError


def elf_with_sections(sections: dict[str, bytes]) -> bytes:
    """A minimal little-endian ELF64 image holding the given sections and a .shstrtab."""
    names = b"\0" + b"".join(n.encode() + b"\0" for n in [*sections, ".shstrtab"])
    body, offsets, name_offs = b"", [], []
    pos = 64
    for n, data in [*sections.items(), (".shstrtab", names)]:
        offsets.append((pos + len(body), len(data)))
        name_offs.append(names.index(n.encode() + b"\0"))
        body += data
    shoff = 64 + len(body)
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"
    struct.pack_into("<Q", header, 0x28, shoff)
    struct.pack_into("<HHH", header, 0x3A, 64, len(offsets) + 1, len(offsets))
    table = bytes(64)  # section 0 is the null section
    for (off, size), name in zip(offsets, name_offs):
        sh = bytearray(64)
        struct.pack_into("<I", sh, 0, name)
        struct.pack_into("<QQ", sh, 0x18, off, size)
        table += bytes(sh)
    # shstrndx points at the last entry; the null entry shifts indices by one.
    struct.pack_into("<H", header, 0x3E, len(offsets))
    return bytes(header) + body + table


def module(depends: str) -> bytes:
    return elf_with_sections({".text": b"\x90" * 8, ".modinfo": f"license=GPL\0depends={depends}\0vermagic=6.1\0".encode()})


def test_modinfo_reads_key_values():
    info = kmod.modinfo(module("virtio,virtio_ring"))
    assert info == {"license": "GPL", "depends": "virtio,virtio_ring", "vermagic": "6.1"}


def test_non_elf_and_truncated_images_are_refused():
    with pytest.raises(ImageError):
        kmod.modinfo(b"not an elf at all" * 4)
    with pytest.raises(ImageError):
        kmod.modinfo(module("x")[:100])


def test_load_order_puts_dependencies_first(tmp_path):
    tree_dir = tmp_path / "kernel"
    (tree_dir / "drivers").mkdir(parents=True)
    for name, deps in {"virtio_ring": "", "virtio": "virtio_ring", "virtio-rng": "virtio,virtio_ring",
                       "net_failover": "failover", "failover": "", "virtio_net": "virtio,net_failover"}.items():
        (tree_dir / "drivers" / f"{name}.ko").write_bytes(module(deps))
    tree = kmod.ModuleTree(tree_dir)
    order = tree.load_order(["virtio_rng", "virtio_net"])
    assert order == ["virtio_ring", "virtio", "virtio_rng", "failover", "net_failover", "virtio_net"]
    with pytest.raises(ImageError, match="not_there"):
        tree.load_order(["not_there"])
