"""QEMU as the reference VMM: the same guest, run the way the benchmarks compare against."""

from __future__ import annotations

from plugvm.testing.guest_image import GuestImage


def qemu_argv(image: GuestImage, *, cpus: int | str = 1, memory: str = "512M", machine: str = "q35",
              cmdline: str | None = None, extra: tuple[str, ...] = ()) -> list[str]:
    """QEMU with KVM, the guest's console on stdio, and no devices but the machine's own.

    -no-reboot: a guest reboot or triple fault ends QEMU, so a test sees it.
    """
    return [
        "qemu-system-x86_64", "-enable-kvm", "-cpu", "host", "-M", machine, "-smp", str(cpus), "-m", memory,
        "-nodefaults", "-display", "none", "-monitor", "none", "-serial", "stdio", "-no-reboot",
        "-kernel", str(image.kernel), "-initrd", str(image.initramfs), "-append", cmdline or image.cmdline,
        *extra,
    ]
