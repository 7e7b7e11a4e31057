"""The virtio-pci transport on this host's KVM (a VM with an irqchip, no vCPU): a
driver written here negotiates, sets up a queue and MSI-X, and virtio-rng answers;
a queue outside guest RAM sets DEVICE_NEEDS_RESET instead of failing the VMM."""

import struct
import time

import pytest

from plugvm.builtin.rng import Rng, RngConfig
from plugvm.interrupts import InterruptRouter
from plugvm.kvm import Kvm
from plugvm.machine import legacy_routes
from plugvm.memory import GuestMemory
from plugvm.testing.virtq_driver import DriverQueue
from plugvm.virtio import common_config as cc
from plugvm.virtio.pci_transport import ISR, MSIX_TABLE, NOTIFY, VirtioPciDevice

BAR = 0xC000_0000


@pytest.fixture
def transport():
    kvm = Kvm()
    vm = kvm.create_vm()
    vm.create_irqchip()
    router = InterruptRouter(vm, legacy_routes())
    memory = GuestMemory(4 << 20)
    t = VirtioPciDevice(Rng(RngConfig()), "__rng", memory, vm, router, BAR, False)
    yield t
    t.close()
    memory.close()
    vm.close()
    kvm.close()


def rd(t, offset, size):
    data = memoryview(bytearray(size))
    t.read(offset, data)
    return int.from_bytes(data, "little")


def wr(t, offset, size, value):
    t.write(offset, memoryview(bytearray(value.to_bytes(size, "little"))))


def cfg(t, offset, size):
    data = memoryview(bytearray(size))
    t.config.read(offset, data)
    return int.from_bytes(data, "little")


def capabilities(t):
    caps, offset = [], cfg(t, 0x34, 1)
    while offset:
        caps.append((cfg(t, offset, 1), offset))
        offset = cfg(t, offset + 1, 1)
    return caps


def negotiate(t, driver_queue, queue_size=16):
    wr(t, 0x14, 1, cc.ACKNOWLEDGE | cc.DRIVER)
    wr(t, 0x00, 4, 1)
    assert rd(t, 0x04, 4) & 1                                   # VIRTIO_F_VERSION_1 (bit 32)
    wr(t, 0x08, 4, 1)
    wr(t, 0x0C, 4, 1)
    wr(t, 0x14, 1, cc.ACKNOWLEDGE | cc.DRIVER | cc.FEATURES_OK)
    assert rd(t, 0x14, 1) & cc.FEATURES_OK
    wr(t, 0x16, 2, 0)
    assert rd(t, 0x18, 2) == 256
    wr(t, 0x18, 2, queue_size)
    for offset, addr in ((0x20, driver_queue.desc), (0x28, driver_queue.avail), (0x30, driver_queue.used)):
        wr(t, offset, 4, addr & 0xFFFFFFFF)
        wr(t, offset + 4, 4, addr >> 32)
    wr(t, 0x1A, 2, 0)                                           # queue 0 → MSI-X vector 0
    wr(t, 0x1C, 2, 1)


def test_config_space_identifies_a_modern_virtio_rng(transport):
    assert (cfg(transport, 0, 2), cfg(transport, 2, 2)) == (0x1AF4, 0x1044)
    caps = capabilities(transport)
    assert [cap for cap, _ in caps].count(0x09) == 4 and 0x11 in [cap for cap, _ in caps]
    kinds = sorted(cfg(transport, offset + 3, 1) for cap, offset in caps if cap == 0x09)
    assert kinds == [1, 2, 3, 4]                                # common, notify, ISR, device config
    assert cfg(transport, 0x10, 4) & ~0xF == BAR


def test_a_driver_gets_random_bytes_through_the_queue(transport):
    driver = DriverQueue(transport.memory, 0x10000, 16)
    negotiate(transport, driver)
    msix = next(offset for cap, offset in capabilities(transport) if cap == 0x11)
    control = memoryview(bytearray(struct.pack("<H", 1 << 15)))
    transport.config.write(msix + 2, control)                   # MSI-X enable
    wr(transport, MSIX_TABLE, 4, 0xFEE0_0000)
    wr(transport, MSIX_TABLE + 8, 4, 0x30)
    wr(transport, MSIX_TABLE + 12, 4, 0)                        # unmask vector 0
    wr(transport, 0x14, 1, cc.ACKNOWLEDGE | cc.DRIVER | cc.FEATURES_OK | cc.DRIVER_OK)
    assert transport.active
    head, [(addr, size)] = driver.add(writable=[64])
    wr(transport, NOTIFY, 2, 0)
    deadline = time.monotonic() + 5
    while not (used := driver.take_used()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert used == [(head, 64)]
    assert transport.memory.read(addr, 64) != bytes(64)
    assert rd(transport, ISR, 1) == 1 and rd(transport, ISR, 1) == 0      # read-to-clear
    wr(transport, 0x14, 1, 0)                                   # reset
    assert rd(transport, 0x14, 1) == 0 and not transport.active


def test_a_queue_outside_guest_ram_needs_reset_and_the_vmm_goes_on(transport):
    bad = DriverQueue(transport.memory, 0x10000, 16)
    bad.desc = 0x7FFF_F000                                      # far past the 4 MiB of RAM
    negotiate(transport, bad)
    wr(transport, 0x14, 1, cc.ACKNOWLEDGE | cc.DRIVER | cc.FEATURES_OK | cc.DRIVER_OK)
    assert rd(transport, 0x14, 1) & cc.DEVICE_NEEDS_RESET
    assert not transport.active
    wr(transport, 0x14, 1, 0)                                   # the driver resets: usable again
    negotiate(transport, DriverQueue(transport.memory, 0x10000, 16))
    wr(transport, 0x14, 1, cc.ACKNOWLEDGE | cc.DRIVER | cc.FEATURES_OK | cc.DRIVER_OK)
    assert transport.active


def test_features_the_device_did_not_offer_are_refused(transport):
    wr(transport, 0x14, 1, cc.ACKNOWLEDGE | cc.DRIVER)
    wr(transport, 0x08, 4, 0)
    wr(transport, 0x0C, 4, 1 << 7)                              # a feature nobody offered
    wr(transport, 0x08, 4, 1)
    wr(transport, 0x0C, 4, 1)
    wr(transport, 0x14, 1, cc.ACKNOWLEDGE | cc.DRIVER | cc.FEATURES_OK)
    assert not rd(transport, 0x14, 1) & cc.FEATURES_OK
