"""Memory hotplug on this host's KVM, without a Linux guest: a Machine with each method
(the test plays the guest's ACPI on the MMIO bus, and is the hostile guest where it
likes), the plugvm_memory_added hook as a device plugin sees it, and vm.resize through
the API on a running tiny guest."""

import json

import pytest

from plugvm import plugins
from plugvm.hookspecs import hookimpl
from plugvm.boot.bootparams import E820_RAM
from plugvm.boot.loader import e820_map
from plugvm.config.memory import MemoryConfig
from plugvm.config.payload import PayloadConfig
from plugvm.config.vm import VmConfig
from plugvm.kvm import Kvm
from plugvm.layout import MEMORY_HOTPLUG
from plugvm.machine import Machine
from plugvm.serial_port import ConsoleBackend, Consoles
from plugvm.testing.tiny_kernel import bzimage

from test_api import Plugvm, errors, vm_body, wait_serial

MiB, GiB = 1 << 20, 1 << 30


class Recorder:
    """A plugin that only listens: what plugvm_memory_added told it, and what the guest
    had been told by then (the GED's flags, read without clearing)."""

    def __init__(self):
        self.calls = []
        self.machine = None

    @hookimpl
    def plugvm_memory_added(self, region, devices):
        ged = self.machine.ged if self.machine is not None else None
        self.calls.append((region.guest_addr, region.size, sorted(type(d).__name__ for d in devices),
                           ged.pending if ged is not None else None))


@pytest.fixture
def build(tmp_path):
    """build(memory=MemoryConfig) → (machine, recorder), with every installed plugin."""
    made = []
    kvm = Kvm()
    backend = Consoles(serial=ConsoleBackend("null"))
    kernel = tmp_path / "spin.bzImage"
    kernel.write_bytes(bzimage(b"", poweroff=False))

    def make(memory):
        registry = plugins.load()
        recorder = Recorder()
        registry.manager.register(recorder, name="recorder")
        m = Machine(kvm, VmConfig(payload=PayloadConfig(kernel=kernel), memory=memory), backend,
                    kvm.supported_cpuid(), registry)
        recorder.machine = m
        made.append(m)
        return m, recorder
    yield make
    for m in made:
        m.close()
    backend.close()
    kvm.close()


def rd(m, addr, size=4):
    data = memoryview(bytearray(size))
    m.mmio.read(addr, data)
    return int.from_bytes(data, "little")


def wr(m, addr, value, size=4):
    m.mmio.write(addr, memoryview(bytearray(value.to_bytes(size, "little"))))


def test_acpi_a_dimm_is_mapped_announced_then_signalled_and_the_guest_reads_it(build):
    m, recorder = build(MemoryConfig(size=512 * MiB, hotplug_size=2 * GiB))
    regs = m.platform[MEMORY_HOTPLUG]
    assert regs > m.platform["pci_hotplug"] > m.platform["cpu_hotplug"] > m.platform["ged"]
    assert m.segment.mem64.base >= 6 * GiB                   # the 64-bit PCI window after the hotplug window
    resized = m.memory_hotplug.resize(GiB)
    # Announced to the plugins (with the VM's devices) before the GED told the guest.
    assert recorder.calls == [(4 * GiB, 512 * MiB, ["Rng", "VirtioConsole"], 0)]
    assert m.ged.pending & 0x2
    # The guest's MSCN and MCRS, as the AML does them.
    wr(m, regs, 0)
    assert rd(m, regs + 0x14, 1) == 0x3                      # enabled, inserting
    wr(m, regs + 0x14, 0x2, 1)
    assert (rd(m, regs + 0x4) << 32 | rd(m, regs)) == 4 * GiB and rd(m, regs + 0x8) == 512 * MiB
    assert rd(m, regs + 0xC) == 0 and resized.done.is_set()
    # KVM has it, the e820 map does not (the guest finds DIMMs through ACPI only).
    assert m.memory.regions[-1].slot == 1                    # after boot RAM's one slot
    assert all(e.addr < 4 * GiB for e in e820_map(m.memory) if e.type == E820_RAM)
    m.memory.write(4 * GiB + 4096, b"dimm")
    assert m.memory.read(4 * GiB + 4096, 4) == b"dimm"
    assert m.memory_actual_size() == GiB


def test_virtio_mem_its_device_and_whole_region_from_boot(build):
    m, recorder = build(MemoryConfig(size=512 * MiB, hotplug_method="virtio-mem", hotplug_size=GiB,
                                     hotplugged_size=256 * MiB))
    assert MEMORY_HOTPLUG not in m.platform                  # no registers: the others keep their pages
    attached = m.devices.devices["mem0"]
    assert attached.transport.device.device_type == 24 and m.devices.device_tree()["mem0"]["parent"] == \
        "_virtio-pci-mem0"
    region = m.memory.regions[-1]
    assert (region.guest_addr, region.size, region.boot) == (4 * GiB, GiB, False) and region.slot >= 1
    assert all(e.addr + e.size <= 4 * GiB for e in e820_map(m.memory) if e.type == E820_RAM)
    config = attached.transport.device.config_bytes()
    assert int.from_bytes(config[16:24], "little") == 4 * GiB and int.from_bytes(config[48:56], "little") == 256 * MiB
    assert recorder.calls == [(4 * GiB, GiB, [], None)]      # added at attach, before any device existed
    assert m.memory_actual_size() == 512 * MiB               # nothing plugged until the driver asks


def test_a_plugin_that_fails_on_new_memory_breaks_nothing(build):
    m, recorder = build(MemoryConfig(size=512 * MiB, hotplug_size=GiB))

    class Broken:
        @hookimpl
        def plugvm_memory_added(self, region, devices):
            raise RuntimeError("a plugin bug")
    m.registry.manager.register(Broken(), name="broken")
    m.memory_hotplug.resize(640 * MiB)
    assert m.memory_actual_size() == 640 * MiB and m.ged.pending & 0x2


# --- vm.resize through the API, on a running tiny guest ----------------------------------------------

@pytest.fixture
def kernel(tmp_path):
    k = tmp_path / "spin.bzImage"
    k.write_bytes(bzimage(b"tiny guest up\n", poweroff=False))
    return k


@pytest.mark.parametrize("method", ["acpi", "virtio-mem"])
def test_resize_through_the_api_and_refusals_that_change_nothing(tmp_path, kernel, method):
    vmm = Plugvm(tmp_path)
    try:
        memory = {"size": 512 * MiB, "hotplug_size": GiB,
                  "hotplug_method": {"acpi": "Acpi", "virtio-mem": "VirtioMem"}[method]}
        assert vmm.put("vm.create", vm_body(kernel, tmp_path, memory=memory,
                                            cpus={"boot_vcpus": 1, "max_vcpus": 2})).status_code == 204
        assert vmm.put("vm.boot").status_code == 204
        wait_serial(tmp_path, 1)

        def state():
            info = vmm.get("vm.info").json()
            return info["memory_actual_size"], info["config"]["memory"], info["config"]["cpus"]["boot_vcpus"]
        before = state()
        for body, words in [({"desired_ram": 512 * MiB + 64 * MiB + 4096}, "desired_ram"),
                            ({"desired_ram": 3 * GiB}, "desired_ram"),
                            ({"desired_ram": -1}, "desired_ram"),
                            ({"desired_ram": 100}, "4096"),
                            ({"desired_vcpus": 2, "desired_ram": 2 * GiB}, "desired_ram")]:
            r = vmm.put("vm.resize", body)
            assert r.status_code == 400 and any(words in e for e in errors(r)), (body, r.text)
        assert state() == before
        # A grow the method takes, and CPUs in the same request.
        r = vmm.put("vm.resize", {"desired_vcpus": 2, "desired_ram": GiB})
        assert r.status_code == 204, r.text
        actual, memory_config, vcpus = state()
        assert vcpus == 2
        if method == "acpi":
            assert actual == GiB and memory_config["size"] == GiB         # a DIMM, live; boot RAM after a reboot
        else:
            # The tiny guest has no virtio-mem driver: asked, not plugged.
            assert actual == 512 * MiB and memory_config["hotplugged_size"] == 512 * MiB
            # A client that waits is told the guest has not taken it (202), not kept forever.
            r = vmm.client.put("vm.resize", content=json.dumps({"desired_ram": 768 * MiB}),
                               headers={"Prefer": "wait=1"})
            assert r.status_code == 202 and r.json() == {"resizing": True}, r.text
    finally:
        vmm.close()
