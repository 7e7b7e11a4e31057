"""Errors of loading a kernel."""

from plugvm.errors import PlugvmError


class BootError(PlugvmError, ValueError):
    """The kernel, initramfs or command line cannot be loaded as asked."""
