"""plugvm-acpi-mem: cloud-hypervisor's ACPI memory hotplug (hotplug_method=acpi)."""

from __future__ import annotations

from plugvm.hookspecs import hookimpl

from plugvm_acpi_mem.method import AcpiMemoryHotplug, AcpiMemoryMethod
from plugvm_acpi_mem.registers import MemoryHotplugRegisters

__all__ = ["AcpiMemoryHotplug", "AcpiMemoryMethod", "MemoryHotplugRegisters", "plugvm_memory_hotplug_methods"]


@hookimpl
def plugvm_memory_hotplug_methods() -> list:
    return [AcpiMemoryMethod()]
