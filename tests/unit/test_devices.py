"""The legacy devices and the buses, driven the way the guest's drivers drive them."""

import pytest

from plugvm.bus import Bus, BusError
from plugvm.cpu import cpuid
from plugvm.devices.acpi_pm import SleepResetRegister
from plugvm.devices.serial import Serial


def port(bus, addr, value=None):
    data = memoryview(bytearray(1))
    if value is None:
        bus.read(addr, data)
        return data[0]
    data[0] = value
    bus.write(addr, data)


@pytest.fixture
def uart():
    out, irqs = [], []
    bus = Bus("pio")
    serial = Serial(out.append, lambda: irqs.append(1))
    bus.insert(0x3F8, 8, serial)
    return bus, serial, out, irqs


def test_uart_transmits_and_signals_thr_empty(uart):
    bus, _, out, irqs = uart
    port(bus, 0x3F9, 0x02)              # IER: THR empty interrupt
    assert irqs and port(bus, 0x3FA) & 0x0F == 0x02   # IIR says THRE ...
    assert port(bus, 0x3FA) & 0x0F == 0x01            # ... and reading it cleared it
    port(bus, 0x3F8, ord("A"))
    assert out == [b"A"] and port(bus, 0x3FD) & 0x60 == 0x60


def test_uart_receives_with_data_ready_interrupts(uart):
    bus, serial, _, irqs = uart
    port(bus, 0x3F9, 0x01)              # IER: received data interrupt
    serial.receive(b"hi")
    assert irqs
    assert port(bus, 0x3FA) & 0x0F == 0x04 and port(bus, 0x3FD) & 0x01
    assert bytes([port(bus, 0x3F8), port(bus, 0x3F8)]) == b"hi"
    assert not port(bus, 0x3FD) & 0x01


def test_uart_passes_the_8250_probe(uart):
    bus, _, out, _ = uart
    port(bus, 0x3FF, 0x55)
    assert port(bus, 0x3FF) == 0x55                   # scratch register
    port(bus, 0x3FA, 0x01)
    assert port(bus, 0x3FA) & 0xC0 == 0xC0           # FIFO enabled: a 16550A
    port(bus, 0x3FC, 0x1A)                            # loopback with RTS and OUT2
    assert port(bus, 0x3FE) & 0xF0 == 0x90            # CTS and DCD come back
    port(bus, 0x3F8, 0x42)
    assert port(bus, 0x3F8) == 0x42 and out == []     # looped back, not sent
    port(bus, 0x3FB, 0x80)                            # DLAB: divisor latch
    port(bus, 0x3F8, 0x01)
    assert port(bus, 0x3F8) == 0x01


def test_bus_rejects_overlaps_and_reads_ones_where_nothing_is():
    bus = Bus("pio")
    bus.insert(0x600, 1, SleepResetRegister(lambda: None, lambda: None))
    with pytest.raises(BusError):
        bus.insert(0x5FF, 2, object())
    assert port(bus, 0x601) == 0xFF
    assert bus.find(0x600, 2) is None                 # an access crossing the end is not the device's


def test_sleep_register_powers_off_on_s5_and_resets_on_1():
    events = []
    reg = SleepResetRegister(lambda: events.append("off"), lambda: events.append("reset"))
    for value in (0x34, 0x01, 0x14):                  # S5+SLP_EN, reset, S5 without SLP_EN
        reg.write(0, memoryview(bytes([value])))
    assert events == ["off", "reset"]


def test_cpuid_gives_each_vcpu_its_apic_id_and_topology():
    supported = [(1, 0, 0, 0x306A9, 0x00010800, 0, 0), (0xB, 0, 1, 0, 0, 0, 0), (0xB, 1, 1, 0, 0, 0, 0),
                 (0x40000000, 0, 0, 0x40000001, 0x4B4D564B, 0x564B4D56, 0x4D)]
    table = cpuid.for_vcpu(supported, apic_id=3, max_vcpus=8)
    leaf1 = table[0]
    assert leaf1[4] >> 24 == 3 and (leaf1[4] >> 16) & 0xFF == 8 and leaf1[5] & cpuid.HYPERVISOR_BIT
    assert table[1][3:] == (0, 1, 0x100, 3) and table[2][3:] == (3, 8, 0x201, 3)
    assert table[3] == supported[3]                   # KVM's own leaves pass through
