"""The virtio-console's queues, driven in-process (no guest): what the guest transmits reaches
the console's host end, what is typed fills receive buffers, and a hostile driver gets an
error (the transport's NEEDS_RESET, tests/host/test_virtio_console_pci.py), never a crash."""

import os
import struct
import threading
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from plugvm import plugins
from plugvm.builtin.console import INPUT_LIMIT, VIRTIO_CONSOLE_F_SIZE, VirtioConsole
from plugvm.config import parse_cli
from plugvm.device_manager import boot_devices
from plugvm.memory import GuestMemory
from plugvm.serial_port import ConsoleBackend, Consoles, _Stdin
from plugvm.testing.virtq_driver import DESC, DriverQueue, RecordingContext
from plugvm.virtio.device import DeviceError
from plugvm.virtio.queue import VirtqueueError

MiB = 1 << 20


@pytest.fixture
def memory():
    m = GuestMemory(4 * MiB)
    yield m
    m.close()


@pytest.fixture
def out(tmp_path):
    return tmp_path / "hvc0.log"


@pytest.fixture
def console(memory, out):
    backend = ConsoleBackend("file", out, "--console")
    device = VirtioConsole(backend)
    rx, tx = DriverQueue(memory, 0x10000, 16), DriverQueue(memory, 0x200000, 16)
    context = RecordingContext()
    device.activate(memory, [rx.device_queue(), tx.device_queue()], VIRTIO_CONSOLE_F_SIZE, context)
    yield device, rx, tx, context
    device.close()
    backend.close()


def test_identity_features_and_config_space(console):
    device, _, _, context = console
    assert device.device_type == 3 and device.queue_sizes == (256, 256)
    assert device.device_features() == VIRTIO_CONSOLE_F_SIZE          # as ch: the size, no MULTIPORT
    assert device.config_bytes() == struct.pack("<HHII", 0, 0, 1, 0)  # not a tty: 0 x 0, one port
    assert context.config_interrupts == 1                             # F_SIZE acked: read the size
    assert list(context.watched) == [device._input]


def test_transmitted_bytes_reach_the_file(console, out):
    device, _, tx, context = console
    head, _ = tx.add([b"hello ", b"world\n"])
    second, _ = tx.add([b"again\n"])
    device.queue_notify(1)
    assert tx.take_used() == [(head, 0), (second, 0)]
    assert out.read_bytes() == b"hello world\nagain\n"
    assert context.interrupts == [1]


def test_typed_input_waits_for_receive_buffers_then_fills_them_in_order(console, memory):
    device, rx, _, context = console
    device.receive(b"abc")
    context.watched[device._input]()          # the I/O thread wakes: no buffers yet, nothing used
    assert rx.take_used() == [] and context.interrupts == []
    first, [(a1, _)] = rx.add(writable=[2])
    second, [(a2, _)] = rx.add(writable=[8])
    third, _ = rx.add(writable=[8])
    device.queue_notify(0)
    assert rx.take_used() == [(first, 2), (second, 1)]                # the third stays posted
    assert memory.read(a1, 2) == b"ab" and memory.read(a2, 1) == b"c"
    assert context.interrupts == [0]
    device.receive(b"d")
    context.watched[device._input]()
    assert rx.take_used() == [(third, 1)]


def test_one_chain_of_several_buffers_is_filled_across_them(console, memory):
    device, rx, _, _ = console
    head, [(a1, _), (a2, _)] = rx.add(writable=[3, 3])
    device.receive(b"12345")
    device.queue_notify(0)
    assert rx.take_used() == [(head, 5)]
    assert memory.read(a1, 3) + memory.read(a2, 2) == b"12345"


def test_input_held_across_a_reset_reaches_the_next_driver(memory, console):
    device, _, _, _ = console
    device.reset()
    device.receive(b"kept")
    rx, tx = DriverQueue(memory, 0x10000, 16), DriverQueue(memory, 0x200000, 16)
    head, [(addr, _)] = rx.add(writable=[16])
    device.activate(memory, [rx.device_queue(), tx.device_queue()], 0, RecordingContext())
    assert rx.take_used() == [(head, 4)] and memory.read(addr, 4) == b"kept"


def test_a_full_input_buffer_makes_the_reader_wait_and_close_releases_it(console):
    device, rx, _, _ = console
    device.receive(b"x" * INPUT_LIMIT)
    waiting = threading.Thread(target=device.receive, args=(b"y",))
    waiting.start()
    time.sleep(0.1)
    assert waiting.is_alive()                  # stdin is not read on while the guest reads nothing
    rx.add(writable=[INPUT_LIMIT])
    device.queue_notify(0)
    waiting.join(5)
    assert not waiting.is_alive()
    device.receive(b"x" * INPUT_LIMIT)
    blocked = threading.Thread(target=device.receive, args=(b"z",))
    blocked.start()
    time.sleep(0.1)
    device.close()                             # a reboot: the old device lets the reader go
    blocked.join(5)
    assert not blocked.is_alive()


# --- a hostile driver ---------------------------------------------------------------------

def test_a_device_writable_transmit_buffer_is_an_error(console, out):
    device, _, tx, _ = console
    tx.add([b"ok"], writable=[4])
    with pytest.raises(DeviceError, match="transmitq"):
        device.queue_notify(1)
    assert out.read_bytes() == b""


def test_a_device_readable_receive_buffer_is_an_error(console, memory):
    device, rx, _, _ = console
    _, _ = rx.add([b"secret"])
    device.receive(b"typed")
    with pytest.raises(DeviceError, match="receiveq"):
        device.queue_notify(0)
    assert b"typed" not in memory.read(rx.data, 64)


@pytest.mark.parametrize("queue", [0, 1])
@pytest.mark.parametrize("addr, length", [(0x7FFF_F000, 16), (4 * MiB - 8, 16), (2**64 - 8, 16)])
def test_buffers_outside_guest_ram_are_an_error(console, queue, addr, length):
    device, rx, tx, _ = console
    driver = (rx, tx)[queue]
    head, _ = driver.add(writable=[8]) if queue == 0 else driver.add([b"12345678"])
    flags = 2 if queue == 0 else 0
    driver.memory.write(driver.desc + 16 * head, DESC.pack(addr, length, flags, 0))
    device.receive(b"input")
    with pytest.raises(VirtqueueError, match="head"):
        device.queue_notify(queue)


def test_notifies_for_unknown_queues_and_before_activation_are_ignored(memory, out):
    device = VirtioConsole(None)
    device.queue_notify(0)
    device.queue_notify(1)
    device.queue_notify(7)
    device.receive(b"nobody listens")
    device.write_config(0, b"\xff" * 12)                # EMERG_WRITE is not offered: ignored
    assert device.config_bytes() == struct.pack("<HHII", 0, 0, 1, 0)
    device.close()
    device.receive(b"after close")


# --- the host ends, and where the device goes ------------------------------------------------

def test_null_mode_discards_and_file_mode_appends(tmp_path, memory):
    path = tmp_path / "out"
    path.write_bytes(b"before\n")
    backend = ConsoleBackend("file", path, "--console")
    backend.writev([memoryview(b"a"), b"", bytearray(b"bc")])
    backend.close()
    assert path.read_bytes() == b"before\nabc"
    null = ConsoleBackend("null", None, "--console")
    null.writev([b"gone"])
    assert null.window_size() == (0, 0)
    null.close()


def test_file_mode_refuses_a_fifo_naming_the_option(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OSError, match="--console"):
        ConsoleBackend("file", tmp_path / "fifo", "--console")


def test_one_stdin_reader_feeds_whichever_backend_holds_it():
    read_end, write_end = os.pipe()
    stdin, got = _Stdin(), []

    class Holder:
        def __init__(self, name):
            self.name = name

        def received(self, data):
            got.append((self.name, data))

    class Pipe:
        def fileno(self):
            return read_end

    first, second = Holder("serial"), Holder("console")
    stdin.acquire(first, Pipe())
    os.write(write_end, b"one")
    _wait(lambda: got == [("serial", b"one")])
    stdin.release(first)
    stdin.acquire(second, Pipe())              # the same thread, not a second reader
    os.write(write_end, b"two")
    _wait(lambda: got[-1:] == [("console", b"two")])
    assert [t.name for t in threading.enumerate()].count("console-input") == 1
    stdin.release(second)
    os.close(write_end)


def test_consoles_keep_unchanged_backends_and_replace_changed_ones(tmp_path, kernel_path):
    vm = parse_cli(["--kernel", str(kernel_path), "--console", f"file={tmp_path / 'a'}"]).vm
    consoles = Consoles.for_config(vm)
    serial, console = consoles.serial, consoles.console
    assert (serial.mode, console.mode) == ("null", "file")
    consoles.configure(vm)
    assert (consoles.serial, consoles.console) == (serial, console)
    consoles.configure(parse_cli(["--kernel", str(kernel_path), "--console", f"file={tmp_path / 'b'}"]).vm)
    assert consoles.serial is serial and consoles.console is not console
    assert consoles.console.path == tmp_path / "b"
    consoles.close()
    assert consoles.console is None


@pytest.mark.parametrize("console, expected", [
    ("null", ["console", "disk", "disk", "rng"]),
    ("off", ["disk", "disk", "rng"]),
    ("null,id=hvc,pci_device_id=9", ["console", "disk", "disk", "rng"]),
])
def test_the_console_is_created_before_the_disks(kernel_path, tmp_path, console, expected):
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(MiB))
    registry = plugins.load()
    vm = parse_cli(["--kernel", str(kernel_path), "--console", console, "--disk", f"path={disk}",
                    f"path={disk},readonly=on"], registry).vm
    wanted = boot_devices(registry, vm)
    assert [device_type.name for device_type, _ in wanted] == expected
    if console != "off":        # the core's own part of the config, under ch's fixed id
        assert wanted[0][1] is vm.console and wanted[0][0].fixed_id == "__console"


def _wait(condition, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.fixture
def kernel_path(tmp_path):
    path = tmp_path / "vmlinux"
    path.write_bytes(b"\x7fELF" + bytes(60))
    return path


# --- hypothesis: random descriptors on both queues --------------------------------------------

descriptor = st.tuples(st.sampled_from([0x1000, 0x3000, 4 * MiB - 4, 4 * MiB, 2**63, 2**64 - 1]),
                       st.integers(0, 64) | st.just(2**32 - 1), st.integers(0, 7), st.integers(0, 20))


@settings(max_examples=200, deadline=None)
@given(tables=st.lists(st.lists(descriptor, min_size=16, max_size=16), min_size=2, max_size=2),
       heads=st.lists(st.lists(st.integers(0, 20), min_size=1, max_size=4), min_size=2, max_size=2),
       typed=st.binary(max_size=64))
def test_random_descriptors_are_processed_or_refused_never_a_crash(tables, heads, typed):
    memory = _fuzz_memory()
    device = VirtioConsole(ConsoleBackend("null", None, "--console"))
    queues = [DriverQueue(memory, base, 16, data_size=0x1000) for base in (0x10000, 0x20000)]
    for queue, table, ring in zip(queues, tables, heads):
        for i, d in enumerate(table):
            memory.write(queue.desc + 16 * i, DESC.pack(*d))
        for i, head in enumerate(ring):
            memory.write(queue.avail + 4 + 2 * i, struct.pack("<H", head))
        memory.write(queue.avail + 2, struct.pack("<H", len(ring)))
    device.activate(memory, [q.device_queue() for q in queues], 0, RecordingContext())
    device.receive(typed)
    for index in (1, 0):
        try:
            device.queue_notify(index)
        except (DeviceError, VirtqueueError):
            pass                # the transport sets DEVICE_NEEDS_RESET
    device.close()


_fuzz: list[GuestMemory] = []


def _fuzz_memory() -> GuestMemory:
    if not _fuzz:
        _fuzz.append(GuestMemory(4 * MiB))
    return _fuzz[0]
