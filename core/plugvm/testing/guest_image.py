"""The test guest: Debian's cloud kernel and a busybox initramfs that serves a shell on the console.

`plugvm-guest-image` (and `make guest`) writes build/guest/vmlinuz, the same kernel as
an ELF vmlinux (PVH, as Kata boots its kernel) and build/guest/initramfs.img, and does
nothing when they are current.
"""

from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from plugvm.testing import cpio, debian, guest_tools, initramfs, kmod, vmlinux
from plugvm.testing.errors import ImageError, TestingError
from plugvm.testing.paths import build_dir

KERNEL_META = "linux-image-cloud-amd64"
# What the later issues test; dependencies are added from each module's depends=.
MODULES = ["virtio_pci", "virtio_blk", "virtio_net", "virtio_mem", "virtiofs", "fuse", "vsock",
           "vmw_vsock_virtio_transport", "virtio_console", "virtio_rng", "virtio_balloon",
           "virtio_pmem", "nd_pmem",    # virtio-pmem's region (libnvdimm) and its /dev/pmemN
           "button", "evdev"]       # the ACPI power button, as an input device acpid reads
READY_MARKER = "GUEST-READY"
PROMPT = "guest# "

# busybox init runs rcS once, then keeps a login shell on the console; it also
# makes `poweroff` and `reboot` in the guest do what they say.
INITTAB = """\
::sysinit:/etc/init.d/rcS
::respawn:/bin/cttyhack /bin/sh -l
::ctrlaltdel:/bin/reboot
::shutdown:/bin/sync
"""

RCS = """\
#!/bin/sh
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
# The cloud kernel leaves hotplugged memory offline (no MEMORY_HOTPLUG_DEFAULT_ONLINE).
# Before the modules: virtio_mem plugs what it is asked for (hotplugged_size) as it loads.
echo online > /sys/devices/system/memory/auto_online_blocks
for m in $(cat /lib/modules/@RELEASE@/load-order); do
  insmod /lib/modules/@RELEASE@/$m.ko || echo "init: insmod $m failed"
done
# From here rcS speaks on the console the kernel chose, which a module may have just
# registered: with console=hvc0 (virtio_console) init started with no console at all.
exec </dev/console >/dev/console 2>&1
ip link set lo up
hostname guest
# The ACPI power button (vm.power-button) arrives as KEY_POWER; busybox acpid maps it
# to /etc/acpi/PWRF/00000080, which powers off, as systemd-logind would. (There is no
# /var: its log and pid files go to /run.)
acpid -l /run/acpid.log -p /run/acpid.pid

# Kernel messages after boot would interleave with the output of console commands.
dmesg -n 1
echo "@READY@ uptime=$(cut -d' ' -f1 /proc/uptime)"
"""


@dataclass(frozen=True)
class GuestImage:
    """A built guest image and the facts tests check against."""

    kernel: Path
    initramfs: Path
    release: str
    modules: tuple[str, ...]
    # The same kernel as an uncompressed ELF booted through its PVH note, as Kata's
    # vmlinux.container is (plugvm.testing.vmlinux).
    vmlinux: Path | None = None
    ready_marker: str = READY_MARKER
    prompt: str = PROMPT
    cmdline: str = "console=ttyS0 panic=-1"

    @classmethod
    def load(cls, root: Path | None = None) -> "GuestImage":
        """The image in root (default build/guest); ImageError if it was never built."""
        root = root or build_dir() / "guest"
        data = initramfs.Manifest(root / "manifest.json").read()
        if data is None or not all((root / name).exists() for name in ("vmlinuz", "vmlinux", "initramfs.img")):
            raise ImageError(f"no guest image in {root}: run `make guest` (plugvm-guest-image) on the host")
        return cls(root / "vmlinuz", root / "initramfs.img", data["release"], tuple(data["modules"]),
                   vmlinux=root / "vmlinux")

    def quiet(self) -> "GuestImage":
        """The same guest booting with `quiet`: the kernel's boot log (about 18 kB) stays
        in its ring buffer, for `dmesg`, instead of crossing the UART, two VM exits a
        character. In the lab that is most of a boot: 37 s → 9 s under plugvm,
        18 s → 4.4 s under QEMU (1 vCPU). Warnings and errors still reach the console."""
        return dataclasses.replace(self, cmdline=f"{self.cmdline} quiet")


def build(root: Path | None = None, *, force: bool = False, log=print) -> GuestImage:
    """Build the guest image into root unless it is current."""
    root = root or build_dir() / "guest"
    debs = root.parent / "debs"
    kernel_pkg = debian.resolve_metapackage(KERNEL_META)
    inputs = {
        "kernel": f"{kernel_pkg}={debian.candidate_version(kernel_pkg)}",
        "busybox": f"busybox-static={debian.candidate_version('busybox-static')}",
        "builder": initramfs.source_digest(sys.modules[__name__], cpio, kmod, initramfs, guest_tools, vmlinux),
        "tools": guest_tools.digest(),
    }
    manifest = initramfs.Manifest(root / "manifest.json")
    outputs = [root / "vmlinuz", root / "vmlinux", root / "initramfs.img"]
    if not force and manifest.is_current(inputs, outputs):
        log(f"guest image is current: {root} ({inputs['kernel']})")
        return GuestImage.load(root)

    kernel = debian.fetch(kernel_pkg, debs)
    busybox = debian.fetch("busybox-static", debs)
    release = debian.kernel_release(kernel)
    tree = kmod.ModuleTree(kernel.root / "lib" / "modules" / release / "kernel")
    order = tree.load_order(MODULES)

    archive = initramfs.busybox_archive(busybox, tree, release, order)
    for guest_path, binary in guest_tools.build().items():     # vsockcat: AF_VSOCK for the vsock tests
        archive.file(guest_path, binary, perm=0o755)
    archive.symlink("init", "bin/busybox")
    archive.symlink("bin/sh", "busybox")
    archive.file("etc/inittab", INITTAB.encode())
    archive.file("etc/init.d/rcS", RCS.replace("@RELEASE@", release).replace("@READY@", READY_MARKER).encode(),
                 perm=0o755)
    archive.file("etc/profile", f"export PS1='{PROMPT}'\n".encode())
    archive.directory("etc/acpi")
    archive.directory("etc/acpi/PWRF")
    archive.file("etc/acpi/PWRF/00000080", b"#!/bin/sh\npoweroff\n", perm=0o755)

    root.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(kernel.root / "boot" / f"vmlinuz-{release}", root / "vmlinuz")
    vmlinux.extract(root / "vmlinuz", root / "vmlinux")
    (root / "initramfs.img").write_bytes(archive.gzipped())
    manifest.write(inputs, release=release, modules=order,
                   sha256={p.name: initramfs.sha256(p) for p in outputs})
    log(f"guest image built: {root} ({release}; modules: {' '.join(order)})")
    return GuestImage.load(root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="plugvm-guest-image", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="output folder (default: build/guest)")
    parser.add_argument("--force", action="store_true", help="rebuild even if current")
    args = parser.parse_args(argv)
    try:
        build(args.out, force=args.force)
    except TestingError as e:
        print(f"plugvm-guest-image: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
