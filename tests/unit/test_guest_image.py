"""The built guest image (make guest runs before the tests): its kernel and initramfs."""

import gzip
import json

import pytest

from plugvm.testing import guest_image
from plugvm.testing.errors import ImageError
from plugvm.testing.guest_image import GuestImage

from test_cpio import parse_newc


@pytest.fixture(scope="module")
def image() -> GuestImage:
    return GuestImage.load()


def test_kernel_is_a_bzimage(image):
    head = image.kernel.read_bytes()[:0x300]
    assert head[0x202:0x206] == b"HdrS"  # Linux boot protocol header signature


def test_initramfs_holds_init_busybox_and_every_module_in_dependency_order(image):
    entries = {e["name"]: e for e in parse_newc(gzip.decompress(image.initramfs.read_bytes()))}
    assert entries["init"]["data"] == b"bin/busybox"
    assert "GUEST-READY" in entries["etc/init.d/rcS"]["data"].decode()
    assert "auto_online_blocks" in entries["etc/init.d/rcS"]["data"].decode()
    order = entries[f"lib/modules/{image.release}/load-order"]["data"].decode().split()
    assert order == list(image.modules)
    for wanted in guest_image.MODULES:
        assert wanted in order
        assert f"lib/modules/{image.release}/{wanted}.ko" in entries
    # Dependencies come first.
    assert order.index("virtio_ring") < order.index("virtio") < order.index("virtio_pci") < order.index("virtio_blk")
    assert order.index("net_failover") < order.index("virtio_net")
    assert order.index("vsock") < order.index("vmw_vsock_virtio_transport")


def test_a_current_image_is_not_rebuilt(image):
    before = image.initramfs.stat().st_mtime_ns
    messages = []
    guest_image.build(image.kernel.parent, log=messages.append)
    assert image.initramfs.stat().st_mtime_ns == before
    assert messages and "current" in messages[0]
    manifest = json.loads((image.kernel.parent / "manifest.json").read_text())
    assert manifest["inputs"]["kernel"].startswith("linux-image-") and "cloud-amd64" in manifest["inputs"]["kernel"]


def test_missing_image_says_how_to_build_it(tmp_path):
    with pytest.raises(ImageError, match="make guest"):
        GuestImage.load(tmp_path)


@pytest.mark.parametrize("name, usage", [
    ("vsockcat", b"usage: vsockcat listen PORT | echo PORT | connect CID PORT"),
    ("randread", b"usage: randread DEVICE BLOCK DEPTH SECONDS"),
])
def test_initramfs_holds_the_guest_tools_static_and_executable(image, name, usage):
    """vsockcat (the vsock tests) and randread (bench/disk.py), from plugvm.testing.guest_tools."""
    import struct
    entries = {e["name"]: e for e in parse_newc(gzip.decompress(image.initramfs.read_bytes()))}
    tool = entries[f"bin/{name}"]
    elf = tool["data"]
    assert elf[:4] == b"\x7fELF" and tool["mode"] & 0o111
    # Static: no PT_INTERP (3) among the program headers, since the guest has no ld.so.
    phoff, = struct.unpack_from("<Q", elf, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", elf, 0x36)
    types = [struct.unpack_from("<I", elf, phoff + i * phentsize)[0] for i in range(phnum)]
    assert 3 not in types and 1 in types
    assert usage in elf


def test_randread_keeps_reads_in_flight_and_counts_them(image, tmp_path):
    """The image's own randread, run on the host against an image file: it reads for the
    time it is given and counts whole reads; a bad argument is refused with exit 2."""
    import os
    import subprocess
    entries = {e["name"]: e for e in parse_newc(gzip.decompress(image.initramfs.read_bytes()))}
    tool = tmp_path / "randread"
    tool.write_bytes(entries["bin/randread"]["data"])
    tool.chmod(0o755)
    disk = tmp_path / "disk.img"
    disk.write_bytes(os.urandom(1 << 20))
    out = subprocess.run([tool, disk, "4096", "8", "1"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    ops, seconds = out.stdout.split()
    assert int(ops) > 100 and 1.0 <= float(seconds) < 5
    bad = subprocess.run([tool, disk, "1000", "8", "1"], capture_output=True, text=True, timeout=30)
    assert bad.returncode == 2 and "not a multiple of 512" in bad.stderr
