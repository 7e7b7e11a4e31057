"""The VMMs tests and benchmarks start on the test guest: plugvm, and QEMU as the reference."""

from __future__ import annotations

import sys
from typing import Callable

from plugvm.testing.guest_image import GuestImage
from plugvm.testing.qemu import qemu_argv


def plugvm_argv(image: GuestImage, cpus: int | str = 1, memory: str = "512M", extra=()) -> list[str]:
    """plugvm on the test guest with its serial console on stdio (`--serial tty --console
    off`, the image's command line); cpus is a count or a whole --cpus value ("boot=2,max=8").
    --cmdline, --serial or --console in extra take the place of these defaults."""
    cpus_value = cpus if isinstance(cpus, str) else f"boot={cpus}"
    given = {arg.split("=")[0] for arg in extra if arg.startswith("--")}
    defaults = [arg for option, value in (("--cmdline", image.cmdline), ("--serial", "tty"), ("--console", "off"))
                if option not in given for arg in (option, value)]
    return [sys.executable, "-m", "plugvm.cli", "--kernel", str(image.kernel), "--initramfs", str(image.initramfs),
            "--cpus", cpus_value, "--memory", f"size={memory}", *defaults, *extra]


# name → (image, cpus, memory, extra args) → argv
LAUNCHERS: dict[str, Callable[..., list[str]]] = {
    "qemu": lambda image, cpus, memory, extra: qemu_argv(image, cpus=cpus, memory=memory, extra=tuple(extra)),
    "plugvm": plugvm_argv,
}
