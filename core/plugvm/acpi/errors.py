"""The errors the ACPI table builder raises on purpose."""

from plugvm.errors import PlugvmError


class AcpiError(PlugvmError, ValueError):
    """The ACPI tables cannot be built as asked (bad platform description, or too big)."""


class AmlError(AcpiError):
    """An AML object was given a value its encoding cannot hold (a bad name, an
    integer out of range, a package too long)."""
