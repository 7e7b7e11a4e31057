"""The error of a failed KVM ioctl."""

from __future__ import annotations

import os

from plugvm.errors import PlugvmError


class KvmError(PlugvmError, OSError):
    """A KVM ioctl failed; carries the errno and the ioctl's name."""

    def __init__(self, errno: int, ioctl: str, detail: str = ""):
        message = f"{ioctl} failed: {os.strerror(errno)}" + (f" ({detail})" if detail else "")
        super().__init__(errno, message)
        self.ioctl = ioctl

    def __str__(self) -> str:
        return self.strerror
