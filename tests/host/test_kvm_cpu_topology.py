"""`--cpus topology=` on this host's KVM: a machine built with 2:3:1:2 gives each vCPU
its APIC id as KVM's vCPU id (the local APIC's ID register), boot and hot-added alike,
and the MADT and the DSDT's _MAT in guest memory carry the same ids."""

import signal
import struct

import pytest

from plugvm import layout
from plugvm.builtin.rng import plugvm_device_types as rng_types
from plugvm.config.cpus import CpusConfig
from plugvm.config.payload import PayloadConfig
from plugvm.config.vm import VmConfig
from plugvm.cpu.topology import Topology
from plugvm.kvm import Kvm
from plugvm.machine import Machine
from plugvm.plugins import Registry
from plugvm.serial_port import ConsoleBackend, Consoles
from plugvm.testing.tiny_kernel import bzimage
from plugvm.vcpu_thread import KICK_SIGNAL

APIC_ID_REGISTER = 0x20      # SDM vol. 3A 10.4.6: xAPIC ID in bits 31:24


def build_machine(tmp_path, cpus):
    kernel = tmp_path / "spin.bzImage"
    kernel.write_bytes(bzimage(b"", poweroff=False))
    registry = Registry()
    registry.register(type("Rng", (), {"plugvm_device_types": staticmethod(rng_types)}), "plugvm")
    kvm = Kvm()
    backend = Consoles(serial=ConsoleBackend("null"))
    machine = Machine(kvm, VmConfig(payload=PayloadConfig(kernel=kernel), cpus=CpusConfig.parse(cpus)), backend,
                      kvm.supported_cpuid(), registry)
    return machine, lambda: (machine.close(), backend.close(), kvm.close())


@pytest.fixture
def machine(tmp_path):
    previous = signal.signal(KICK_SIGNAL, lambda signum, frame: None)     # as the Vmm installs it
    m, close = build_machine(tmp_path, "boot=2,max=12,topology=2:3:1:2")
    yield m
    close()
    signal.signal(KICK_SIGNAL, previous)


def lapic_id(vcpu):
    return struct.unpack_from("<I", vcpu.get_lapic(), APIC_ID_REGISTER)[0] >> 24


def table(memory, signature):
    """A table found from the RSDP through the XSDT (the DSDT through the FADT)."""
    rsdp = memory.read(layout.RSDP_POINTER, 36)
    xsdt_addr = struct.unpack_from("<Q", rsdp, 24)[0]
    xsdt = memory.read(xsdt_addr, struct.unpack_from("<I", memory.read(xsdt_addr, 8), 4)[0])
    for addr in struct.unpack_from(f"<{(len(xsdt) - 36) // 8}Q", xsdt, 36):
        data = memory.read(addr, struct.unpack_from("<I", memory.read(addr, 8), 4)[0])
        if data[:4] == signature:
            return data
        if data[:4] == b"FACP" and signature == b"DSDT":
            dsdt = struct.unpack_from("<Q", data, 140)[0]
            return memory.read(dsdt, struct.unpack_from("<I", memory.read(dsdt, 8), 4)[0])
    raise AssertionError(f"no {signature!r}")


def test_kvm_vcpu_ids_madt_and_mat_are_the_topologys_apic_ids(machine):
    ids = Topology(2, 3, 1, 2).apic_ids(12)
    assert ids[6:] == (8, 9, 10, 11, 12, 13)
    assert [lapic_id(machine.vcpus[i]) for i in (0, 1)] == [0, 1]
    madt, dsdt = table(machine.memory, b"APIC"), table(machine.memory, b"DSDT")
    offset, seen = 44, []
    while offset < len(madt):
        if madt[offset] == 0:                            # Local APIC: UID, APIC id, flags
            seen.append(struct.unpack_from("<BBI", madt, offset + 2)[:2])
        offset += madt[offset + 1]
    assert seen == list(enumerate(ids))
    for i, apic_id in enumerate(ids):
        assert b"_MAT\x11\x0b\x0a\x08" + struct.pack("<BBBBI", 0, 8, i, apic_id, 1) in dsdt
    # Hot-added vCPUs are created the same way, with their own ids. Paused, their
    # threads park outside KVM_RUN, where the vCPU's ioctls can be made.
    machine.pause()
    try:
        machine.resize_vcpus(12)
        assert all(machine.threads[i].parked.wait(5) for i in range(2, 12))
        assert [lapic_id(machine.vcpus[i]) for i in range(12)] == list(ids)
        assert sorted(machine.vcpus) == list(range(12))
    finally:
        machine.stop()


def test_without_a_topology_the_ids_stay_the_indexes(tmp_path):
    m, close = build_machine(tmp_path, "boot=3,max=3")
    try:
        assert [lapic_id(m.vcpus[i]) for i in range(3)] == [0, 1, 2]
    finally:
        close()
