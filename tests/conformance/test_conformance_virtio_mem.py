"""plugvm-virtio-mem against the conformance suite: the method (MemoryMethodTests) and its
device (a type the VM config's memory part sets), built over a real virtio-mem region."""

import struct

import pytest

import plugvm_virtio_mem
from plugvm.config.memory import MemoryConfig
from plugvm.device_manager import DeviceEnv
from plugvm.memory import GuestMemory
from plugvm.memory_hotplug import MemoryHotplugEnv
from plugvm.testing.conformance import DeviceConformance, MemoryMethodTests
from plugvm.testing.conformance import capabilities as caps

MiB = 1 << 20


class TestVirtioMemMethod(MemoryMethodTests):
    @pytest.fixture
    def plugin(self):
        return plugvm_virtio_mem

    @pytest.fixture
    def memory_method_name(self):
        return "virtio-mem"

    @pytest.fixture
    def invalid_memory_options(self):
        return [("size=128M,hotplug_method=virtio-mem,hotplug_size=512M,hotplugged_size=1G", "hotplugged_size"),
                ("size=128M,hotplug_method=virtio-mem,hotplug_size=511M", "hotplug_size")]

    @pytest.fixture
    def refused_sizes(self):
        return [(128 << 20) + MiB]              # half a 2 MiB virtio-mem block


class TestVirtioMemDevice(DeviceConformance):
    @pytest.fixture
    def plugin(self):
        return plugvm_virtio_mem

    @pytest.fixture
    def device_type_name(self):
        return "virtio-mem"

    @pytest.fixture
    def capabilities(self):
        # Set by --memory hotplug_method=virtio-mem, not by an option of its own; never hot-added.
        return caps.DEFAULT - {caps.OPTIONS, caps.HOTPLUG, caps.REMOVE}

    @pytest.fixture
    def memory_config(self):
        return MemoryConfig(size=16 * MiB, hotplug_method="virtio-mem", hotplug_size=128 * MiB)

    @pytest.fixture
    def device_env(self, vm_config, memory_config):
        # One boot's virtio-mem, attached by hand to guest memory of its own: what a Machine's
        # boot gives the device's factory (DeviceEnv.memory_hotplug).
        memory = GuestMemory(memory_config.size)
        method = plugvm_virtio_mem.VirtioMemMethod()
        hotplug = method.attach(MemoryHotplugEnv(
            memory=memory, config=memory_config, window=method.reserve(memory.boot_end, memory_config),
            registers_addr=None, add_region=memory.add_region, notify_guest=lambda: None))
        yield DeviceEnv(vm_config, memory_hotplug=hotplug)
        hotplug.close()
        memory.close()

    @pytest.fixture
    def request_samples(self):
        # virtio_mem_req: plug, unplug, unplug-all and state of blocks at the region's start.
        return [struct.pack("<H6xQH6x", kind, 1 << 32, 1) for kind in (0, 1, 2, 3)]
