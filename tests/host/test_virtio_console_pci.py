"""The virtio-console behind the virtio-pci transport on this host's KVM (no vCPU): a driver
written here finds device 0x1043, transmits through its I/O thread, and a device-writable
transmit buffer sets DEVICE_NEEDS_RESET; after the driver's reset the device works again."""

import struct
import time

import pytest
from test_virtio_pci import rd, wr

from plugvm.builtin.console import VirtioConsole
from plugvm.interrupts import InterruptRouter
from plugvm.kvm import Kvm
from plugvm.machine import legacy_routes
from plugvm.memory import GuestMemory
from plugvm.serial_port import ConsoleBackend
from plugvm.testing.virtq_driver import DriverQueue
from plugvm.virtio import common_config as cc
from plugvm.virtio.pci_transport import DEVICE_CONFIG, NOTIFY, NOTIFY_MULTIPLIER, VirtioPciDevice

BAR = 0xC000_0000


@pytest.fixture
def console(tmp_path):
    kvm = Kvm()
    vm = kvm.create_vm()
    vm.create_irqchip()
    memory = GuestMemory(4 << 20)
    out = tmp_path / "hvc0"
    backend = ConsoleBackend("file", out, "--console")
    t = VirtioPciDevice(VirtioConsole(backend), "__console",
                        memory, vm, InterruptRouter(vm, legacy_routes()), BAR, False)
    yield t, out
    t.close()
    backend.close()
    memory.close()
    vm.close()
    kvm.close()


def start(t):
    """ACKNOWLEDGE to DRIVER_OK with VERSION_1 and F_SIZE, receiveq and transmitq of 16."""
    queues = [DriverQueue(t.memory, 0x10000, 16), DriverQueue(t.memory, 0x200000, 16)]
    wr(t, 0x14, 1, cc.ACKNOWLEDGE | cc.DRIVER)
    wr(t, 0x00, 4, 0)
    assert rd(t, 0x04, 4) & 1                                   # VIRTIO_CONSOLE_F_SIZE
    for select, value in ((0, 1), (1, 1)):                      # F_SIZE; VERSION_1 (bit 32)
        wr(t, 0x08, 4, select)
        wr(t, 0x0C, 4, value)
    wr(t, 0x14, 1, cc.ACKNOWLEDGE | cc.DRIVER | cc.FEATURES_OK)
    assert rd(t, 0x14, 1) & cc.FEATURES_OK
    for index, q in enumerate(queues):
        wr(t, 0x16, 2, index)
        wr(t, 0x18, 2, 16)
        for offset, addr in ((0x20, q.desc), (0x28, q.avail), (0x30, q.used)):
            wr(t, offset, 4, addr & 0xFFFFFFFF)
            wr(t, offset + 4, 4, addr >> 32)
        wr(t, 0x1C, 2, 1)
    wr(t, 0x14, 1, cc.ACKNOWLEDGE | cc.DRIVER | cc.FEATURES_OK | cc.DRIVER_OK)
    assert t.active
    return queues


def until(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not (value := condition()) and time.monotonic() < deadline:
        time.sleep(0.01)
    return value


def test_transmit_then_a_hostile_chain_needs_reset_and_the_reset_driver_goes_on(console):
    t, out = console
    data = memoryview(bytearray(4))
    t.config.read(0, data)
    assert struct.unpack("<HH", data) == (0x1AF4, 0x1043)
    config = memoryview(bytearray(12))
    t.read(DEVICE_CONFIG, config)
    assert struct.unpack("<HHII", config) == (0, 0, 1, 0)      # cols, rows (no tty), max_nr_ports, emerg_wr

    _, tx = start(t)
    head, _ = tx.add([b"hvc0 says hi\n"])
    wr(t, NOTIFY + NOTIFY_MULTIPLIER, 2, 1)
    assert until(tx.take_used) == [(head, 0)]
    assert until(lambda: out.read_bytes() == b"hvc0 says hi\n")

    tx.add([b"leak"], writable=[64])                            # transmitq buffers are device-readable
    wr(t, NOTIFY + NOTIFY_MULTIPLIER, 2, 1)
    assert until(lambda: rd(t, 0x14, 1) & cc.DEVICE_NEEDS_RESET)
    assert not t.active and out.read_bytes() == b"hvc0 says hi\n"

    wr(t, 0x14, 1, 0)                                           # the driver resets: usable again
    _, tx = start(t)
    head, _ = tx.add([b"again\n"])
    wr(t, NOTIFY + NOTIFY_MULTIPLIER, 2, 1)
    assert until(tx.take_used) == [(head, 0)]
    assert until(lambda: out.read_bytes().endswith(b"again\n"))
