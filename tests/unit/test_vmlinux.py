"""plugvm.testing.vmlinux: the ELF vmlinux inside Debian's bzImage (Kata boots such a
kernel through its PVH note), and bzImages it refuses."""

import gzip
import struct

import pytest

from plugvm.boot import elf
from plugvm.boot.errors import BootError
from plugvm.testing import vmlinux
from plugvm.testing.guest_image import GuestImage


def test_the_guest_images_vmlinux_is_its_kernel_as_an_elf_with_a_pvh_note():
    image = GuestImage.load()
    kind, payload = vmlinux.payload(image.kernel.read_bytes())
    assert kind == "lz4"                        # Debian's CONFIG_KERNEL_LZ4
    kernel = elf.parse(image.vmlinux.read_bytes())
    assert kernel.segments and any(s.paddr <= kernel.entry < s.paddr + s.memsz for s in kernel.segments)
    assert image.vmlinux.stat().st_size > 3 * len(payload)


def bzimage_with(payload: bytes) -> bytes:
    """A minimal bzImage header (protocol 2.15, loaded high) with `payload` right after
    the setup sectors."""
    setup = bytearray(5 * 512)
    setup[0x1F1] = 4                            # setup_sects
    setup[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", setup, 0x206, 0x20F)
    setup[0x211] = 0x01                         # LOADED_HIGH
    struct.pack_into("<II", setup, 0x248, 0, len(payload))
    return bytes(setup) + payload


def test_a_gzip_payload_is_read_and_a_kernel_without_the_pvh_note_refused(tmp_path):
    not_pvh = b"\x7fELF\x02\x01" + bytes(58)
    path = tmp_path / "bzImage"
    path.write_bytes(bzimage_with(gzip.compress(not_pvh)))
    assert vmlinux.decompress(*vmlinux.payload(path.read_bytes())) == not_pvh
    with pytest.raises(BootError, match="ELF"):
        vmlinux.extract(path, tmp_path / "vmlinux")
    assert not (tmp_path / "vmlinux").exists()


def test_a_payload_past_the_file_or_of_no_known_format_is_refused(tmp_path):
    image = bytearray(bzimage_with(b"\x00" * 64))
    with pytest.raises(BootError, match="unknown format"):
        vmlinux.payload(bytes(image))
    struct.pack_into("<I", image, 0x24C, 1 << 20)
    with pytest.raises(BootError, match="not inside"):
        vmlinux.payload(bytes(image))
