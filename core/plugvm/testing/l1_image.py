"""The lab's L1 Linux: Debian's generic kernel and an initramfs that loads kvm_amd
and switches to the host's root file system, shared read-only over 9p.

Recipe measured in shared/reference/nested-lab.md: L1 needs only 9p, virtio-pci
and the KVM modules; everything else (python, qemu, the checkout) it reads from
the host.
"""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from plugvm.testing import cpio, debian, initramfs, kmod
from plugvm.testing.errors import ImageError
from plugvm.testing.paths import build_dir

KERNEL_META = "linux-image-amd64"
# 9p for the shares; kvm_amd for /dev/kvm; tun for the tap devices of network tests;
# vhost_vsock for QEMU's vhost-vsock-pci, the reference bench/vsock.py measures against.
MODULES = ["virtio_pci", "9pnet_virtio", "9p", "kvm_amd", "tun", "vhost_vsock"]
MODULE_PARAMS = {"kvm_amd": "nested=1 npt=1"}

# Stage 1, PID 1 in the initramfs. The lab folder's path comes on the kernel
# command line as plugvm.lab=PATH and is mounted at that same path in L1.
INIT = """\
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
rel=@RELEASE@
for m in $(cat /lib/modules/$rel/load-order); do
  case $m in @PARAMS@ *) args= ;; esac
  insmod /lib/modules/$rel/$m.ko $args || echo "lab-l1: insmod $m failed"
done
lab=$(sed -n 's/.*plugvm\\.lab=\\([^ ]*\\).*/\\1/p' /proc/cmdline)
mkdir -p /newroot
mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=512000,cache=loose hostroot /newroot \\
  || { echo "PLUGVM-LAB-FAILED cannot mount the host root"; poweroff -f; }
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
mount --move /dev /newroot/dev
mount -t tmpfs tmpfs /newroot/run
mkdir -p /newroot/dev/shm /newroot/dev/pts
mount -t tmpfs tmpfs /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 lab /newroot$lab \\
  || { echo "PLUGVM-LAB-FAILED cannot mount the lab folder $lab"; poweroff -f; }
exec switch_root /newroot /bin/sh $lab/stage2.sh
"""


@dataclass(frozen=True)
class L1Image:
    kernel: Path
    initramfs: Path
    release: str


def build(root: Path | None = None, *, force: bool = False, log=print) -> L1Image:
    """Build the L1 image into root (default build/lab/image) unless it is current."""
    root = root or build_dir() / "lab" / "image"
    debs = build_dir() / "debs"
    kernel_pkg = debian.resolve_metapackage(KERNEL_META)
    inputs = {
        "kernel": f"{kernel_pkg}={debian.candidate_version(kernel_pkg)}",
        "busybox": f"busybox-static={debian.candidate_version('busybox-static')}",
        "builder": initramfs.source_digest(sys.modules[__name__], cpio, kmod, initramfs),
    }
    manifest = initramfs.Manifest(root / "manifest.json")
    kernel_out, initrd_out = root / "vmlinuz", root / "initramfs.img"
    if force or not manifest.is_current(inputs, [kernel_out, initrd_out]):
        kernel = debian.fetch(kernel_pkg, debs)
        busybox = debian.fetch("busybox-static", debs)
        release = debian.kernel_release(kernel)
        tree = kmod.ModuleTree(kernel.root / "lib" / "modules" / release / "kernel")
        order = tree.load_order(MODULES)
        params = " ".join(f'{m}) args="{p}" ;;' for m, p in MODULE_PARAMS.items())
        archive = initramfs.busybox_archive(busybox, tree, release, order)
        archive.directory("newroot")
        archive.file("init", INIT.replace("@RELEASE@", release).replace("@PARAMS@", params).encode(), perm=0o755)
        root.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(kernel.root / "boot" / f"vmlinuz-{release}", kernel_out)
        initrd_out.write_bytes(archive.gzipped())
        manifest.write(inputs, release=release, modules=order)
        log(f"L1 image built: {root} ({release})")
    data = manifest.read()
    if data is None:
        raise ImageError(f"no L1 image in {root}")
    return L1Image(kernel_out, initrd_out, data["release"])
