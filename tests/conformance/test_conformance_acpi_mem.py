"""plugvm-acpi-mem, cloud-hypervisor's ACPI memory hotplug, against the conformance suite."""

import pytest

import plugvm_acpi_mem
from plugvm.testing.conformance import MemoryMethodTests


class TestAcpiMemory(MemoryMethodTests):
    @pytest.fixture
    def plugin(self):
        return plugvm_acpi_mem

    @pytest.fixture
    def memory_method_name(self):
        return "acpi"

    @pytest.fixture
    def invalid_memory_options(self):
        return [("size=128M,hotplug_method=acpi,hotplug_size=512M,hotplugged_size=128M", "hotplugged_size")]

    @pytest.fixture
    def refused_sizes(self):
        # Growing by 64 MiB: not a whole Linux memory block.
        return [(128 + 64) << 20]
