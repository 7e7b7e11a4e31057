"""Guest-physical ranges devices own (plugvm.device_memory), on this host's KVM: a range
takes a KVM slot and a piece of the 64-bit PCI window, and the core gives both back
when the device is ejected, closed or fails to build, even when a plugin forgets; the
next range gets them again. The guest is played by the test (it ejects through B0EJ,
as the guest's _EJ0 does), as in test_hotplug.py."""

import errno
import mmap
import os
import threading
from dataclasses import dataclass

import plugvm_virtio_pmem
import pytest
from plugvm_virtio_pmem import PmemConfig

from plugvm.config.payload import PayloadConfig
from plugvm.config.vm import VmConfig
from plugvm.device_config import PciFields
from plugvm.device_memory import ALIGNMENT, DeviceMemory, DeviceMemoryError
from plugvm.devices.pci_hotplug import B0EJ
from plugvm.kvm import Kvm, KvmError
from plugvm.machine import Machine
from plugvm.memory_slots import MemorySlots
from plugvm.pci.allocator import AddressAllocator
from plugvm.plugins import DeviceType, Registry
from plugvm.serial_port import ConsoleBackend, Consoles
from plugvm.testing.tiny_kernel import bzimage
from plugvm.virtio.device import VirtioDevice

MiB = 1 << 20


@pytest.fixture
def kvm():
    k = Kvm()
    yield k
    k.close()


@pytest.fixture
def backing(tmp_path):
    path = tmp_path / "pmem.img"
    path.write_bytes(b"\0" * (4 * MiB))
    return path


def overlaps_a_slot(vm, addr):
    """True if KVM holds a slot at addr: a second slot there is refused with EEXIST."""
    probe = mmap.mmap(-1, 2 * MiB)
    try:
        vm.map_memory(500, addr, probe)
    except KvmError as e:
        assert e.errno == errno.EEXIST
        return True
    finally:
        probe.close()
    vm.unmap_memory(500)
    return False


def test_a_range_has_its_own_kvm_slot_and_both_are_reused_once_closed(kvm, backing):
    vm = kvm.create_vm()
    window = AddressAllocator(64 << 30, 64 << 30)
    slots = MemorySlots()
    slots.allocate()                                  # boot RAM's
    dm = DeviceMemory(vm, slots, window)
    try:
        fd = os.open(backing, os.O_RDWR)
        first = dm.for_device("a").map(fd, 4 * MiB)
        os.close(fd)                                  # the mapping holds its own reference
        assert (first.guest_addr, first.size, first.slot) == (64 << 30, 4 * MiB, 1)
        assert first.guest_addr % ALIGNMENT == 0 and window.allocations() == [(64 << 30, 4 * MiB)]
        assert overlaps_a_slot(vm, first.guest_addr + 2 * MiB)
        first.mapping[:7] = b"written"                # a vCPU's store lands in the same pages
        first.mapping.flush()
        assert backing.read_bytes()[:7] == b"written"

        first.close()
        first.close()                                 # idempotent
        assert not overlaps_a_slot(vm, first.guest_addr) and slots.in_use() == [0] and window.allocations() == []
        fd = os.open(backing, os.O_RDONLY)
        again = dm.for_device("b").map(fd, 2 * MiB, shared=False)      # private: a read-only fd will do
        os.close(fd)
        assert (again.guest_addr, again.slot) == (first.guest_addr, first.slot)
        ro = dm.for_device("b").map(os.open(backing, os.O_RDONLY), 2 * MiB, readonly=True, shared=True)
        assert ro.slot == 2 and ro.guest_addr == first.guest_addr + 2 * MiB
        assert dm.release("b") == 2 and slots.in_use() == [0] and window.allocations() == []
    finally:
        dm.close()
        vm.close()


@pytest.mark.parametrize("size, offset, message", [
    (0, 0, "not a positive multiple"), (4097, 0, "not a positive multiple"), (2 * MiB, 17, "offset 17"),
    (8 * MiB, 0, "the host cannot map"),             # past the file's end (it is 4 MiB)
])
def test_a_bad_request_maps_nothing(kvm, backing, size, offset, message):
    vm = kvm.create_vm()
    slots, window = MemorySlots(), AddressAllocator(64 << 30, 64 << 30)
    dm = DeviceMemory(vm, slots, window)
    fd = os.open(backing, os.O_RDWR)
    try:
        with pytest.raises(DeviceMemoryError, match=message):
            dm.for_device("a").map(fd, size, offset=offset)
        assert dm.ranges() == [] and slots.in_use() == [] and window.allocations() == []
    finally:
        os.close(fd)
        vm.close()


# --- in a machine: the device manager releases what devices hold ---------------------------------

@dataclass(frozen=True, kw_only=True)
class GrabConfig(PciFields):
    fail: bool = False

    def to_json(self):
        return self.pci_json()


class Forgetful(VirtioDevice):
    """Maps a range and never closes it: the core must."""
    device_type = 42
    queue_sizes = (16,)

    def __init__(self, config, env, backing):
        fd = os.open(backing, os.O_RDWR)
        try:
            self.range = env.guest_ranges.map(fd, 2 * MiB)
        finally:
            os.close(fd)
        if config.fail:
            raise DeviceMemoryError("this device fails after it took a range")


def grab_type(backing):
    return DeviceType(name="grab", kind="virtio", cli_option="--grab", config_key="grabs", api_verb="vm.add-grab",
                      id_prefix="_grab", parse=None, from_json=None,
                      create=lambda config, env: Forgetful(config, env, backing))


@pytest.fixture
def machine(tmp_path, kvm, backing):
    kernel = tmp_path / "spin.bzImage"
    kernel.write_bytes(bzimage(b"", poweroff=False))
    registry = Registry()
    registry.register(plugvm_virtio_pmem, "plugvm-virtio-pmem")
    backend = Consoles(serial=ConsoleBackend("null"))
    m = Machine(kvm, VmConfig(payload=PayloadConfig(kernel=kernel)), backend, kvm.supported_cpuid(), registry)
    yield m
    m.close()
    backend.close()


def eject(m, slot):
    data = memoryview(bytearray((1 << slot).to_bytes(4, "little")))
    m.mmio.write(m.platform["pci_hotplug"] + B0EJ, data)


def fds():
    return sorted(os.listdir("/proc/self/fd"))


def threads():
    return sorted(t.name for t in threading.enumerate())


def test_a_hot_added_pmem_gets_a_range_and_a_slot_which_its_eject_frees(machine, backing):
    pmem = machine.registry.by_verb("vm.add-pmem")
    before_fds, before_threads = fds(), threads()
    ram_slots = machine.slots.in_use()
    info = machine.add_device(pmem, PmemConfig(file=backing, id="test0"))
    (r,) = machine.device_memory.ranges("test0")
    attached = machine.devices.devices["test0"]
    assert r.guest_addr >= machine.segment.mem64.base and r.end <= machine.segment.mem64.end
    assert r.slot not in ram_slots and machine.slots.in_use() == sorted(ram_slots + [r.slot])
    assert overlaps_a_slot(machine.vm, r.guest_addr)
    assert machine.devices.device_tree()["test0"]["resources"] == [
        {"MmioAddressRange": {"base": r.guest_addr, "size": 4 * MiB}}]
    # The range is no BAR's: a BAR the guest moves onto it is refused.
    machine.devices._bar_moved(attached, r.guest_addr)
    assert attached.bar != r.guest_addr

    machine.request_removal("test0")
    eject(machine, attached.slot)
    assert attached.gone.is_set() and machine.device_memory.ranges() == []
    assert machine.slots.in_use() == ram_slots and not overlaps_a_slot(machine.vm, r.guest_addr)
    assert fds() == before_fds and threads() == before_threads
    machine.add_device(pmem, PmemConfig(file=backing, id="test1"))
    (again,) = machine.device_memory.ranges("test1")
    assert (again.guest_addr, again.slot, machine.devices.devices["test1"].slot) == (r.guest_addr, r.slot,
                                                                                     attached.slot)
    assert info.bdf == "0000:00:01.0"             # no rng in this registry: the first free slot


def test_ranges_a_plugin_forgets_are_released_at_eject_and_after_a_failed_create(machine, backing):
    grab = grab_type(backing)
    ram_slots, before = machine.slots.in_use(), fds()
    with pytest.raises(DeviceMemoryError, match="fails after it took a range"):
        machine.add_device(grab, GrabConfig(id="bad", fail=True))
    assert "bad" not in machine.devices.devices and machine.device_memory.ranges() == []
    assert machine.slots.in_use() == ram_slots and fds() == before
    assert machine.segment.mem64.allocations() == []            # neither the BAR nor the range

    machine.add_device(grab, GrabConfig(id="forgetful"))
    (r,) = machine.device_memory.ranges("forgetful")
    machine.request_removal("forgetful")
    eject(machine, machine.devices.devices["forgetful"].slot)
    assert r.closed and machine.device_memory.ranges() == [] and machine.slots.in_use() == ram_slots
    assert fds() == before and machine.segment.mem64.allocations() == []


def test_the_machines_teardown_releases_every_range(machine, backing):
    machine.add_device(grab_type(backing), GrabConfig(id="forgetful"))
    machine.add_device(machine.registry.by_verb("vm.add-pmem"), PmemConfig(file=backing, id="pm"))
    dm = machine.device_memory
    held = dm.ranges()
    assert len(held) == 2
    machine.close()
    assert dm.ranges() == [] and all(r.closed for r in held)
