"""The legacy devices and the buses, driven the way the guest's drivers drive them."""

import threading
import time

import pytest

from plugvm.bus import Bus, BusError
from plugvm.cpu import cpuid
from plugvm.devices.acpi_pm import SleepResetRegister
from plugvm.devices import serial as serial_module
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
    yield bus, serial, out, irqs
    serial.close()


def test_uart_transmits_and_signals_thr_empty(uart):
    bus, serial, out, irqs = uart
    port(bus, 0x3F9, 0x02)              # IER: THR empty interrupt
    assert irqs and port(bus, 0x3FA) & 0x0F == 0x02   # IIR says THRE ...
    assert port(bus, 0x3FA) & 0x0F == 0x01            # ... and reading it cleared it
    port(bus, 0x3F8, ord("A"))
    assert port(bus, 0x3FD) & 0x60 == 0x60
    serial.flush()
    assert out == [b"A"]


def test_uart_writes_whole_lines_in_order(uart):
    bus, serial, out, _ = uart
    for byte in b"one\r\ntwo\r\nthr":
        port(bus, 0x3F8, byte)
    assert out == [b"one\r\n", b"two\r\n"]       # a write per line, not per byte
    for byte in b"ee\n":
        port(bus, 0x3F8, byte)
    assert out[2:] == [b"three\n"]


def test_uart_writes_a_partial_line_soon_and_the_rest_on_close(uart):
    bus, serial, out, _ = uart
    for byte in b"login: ":
        port(bus, 0x3F8, byte)
    assert out == []
    deadline = time.monotonic() + 5
    while not out and time.monotonic() < deadline:
        time.sleep(serial_module.FLUSH_DELAY)
    assert out == [b"login: "]                     # the prompt, without waiting for a newline
    port(bus, 0x3F8, ord("x"))
    serial.close()
    assert out == [b"login: ", b"x"]
    port(bus, 0x3F8, ord("y"))                      # after close: at once
    assert out[-1] == b"y"


def test_uart_closes_while_its_flusher_waits_out_the_delay(monkeypatch):
    monkeypatch.setattr(serial_module, "FLUSH_DELAY", 0.3)
    out = []
    serial = Serial(out.append, lambda: None)
    serial.write(0, memoryview(b"x"))              # arms the flusher, which sleeps 0.3 s ...
    time.sleep(0.1)
    closer = threading.Thread(target=serial.close, daemon=True)
    closer.start()                                 # ... and is closed meanwhile
    closer.join(5)
    assert not closer.is_alive() and out == [b"x"]


def test_uart_holds_no_more_than_a_chunk(uart):
    bus, serial, out, _ = uart
    for _ in range(serial_module.TX_CHUNK):
        port(bus, 0x3F8, ord("."))
    assert out == [b"." * serial_module.TX_CHUNK]


def test_uart_raises_thr_empty_once_per_burst(uart):
    bus, _, _, irqs = uart
    port(bus, 0x3F9, 0x02)
    assert port(bus, 0x3FA) & 0x0F == 0x02           # the handler reads IIR ...
    irqs.clear()
    for byte in b"0123456789abcdef":                 # ... and fills the FIFO
        port(bus, 0x3F8, byte)
    assert irqs == [1]                                # one edge, not sixteen
    assert port(bus, 0x3FA) & 0x0F == 0x02
    port(bus, 0x3F8, ord("g"))
    assert irqs == [1, 1]                             # IIR was read: the next byte raises it again


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
