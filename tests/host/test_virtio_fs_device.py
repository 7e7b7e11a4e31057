"""plugvm-virtio-fs on this host's KVM with the real virtiofsd, no Linux guest: the test
is the guest's virtio driver on the device's BAR (features, queues, DRIVER_OK), sends
FUSE_INIT through the rings (virtiofsd answers into guest RAM on its own), hot-adds RAM
and has virtiofsd write into it, kills virtiofsd (the device breaks, nothing else), and
checks the refusals and the command line's one-line error."""

import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from plugvm_virtio_fs import FsConfig, FsError

from plugvm import plugins
from plugvm.config.memory import MemoryConfig
from plugvm.config.payload import PayloadConfig
from plugvm.config.vm import VmConfig
from plugvm.kvm import Kvm
from plugvm.machine import Machine
from plugvm.serial_port import ConsoleBackend, Consoles
from plugvm.testing.tiny_kernel import bzimage
from plugvm.testing.virtq_driver import DriverQueue
from plugvm.virtio import common_config as cc
from plugvm.virtio.pci_transport import NOTIFY, NOTIFY_MULTIPLIER

from test_virtio_pci import rd, wr
from test_vhost_user_virtiofsd import FUSE_INIT, IN_HEADER, INIT_IN, OUT_HEADER, virtiofsd  # noqa: F401 (fixture)

MiB, GiB = 1 << 20, 1 << 30
BIN = Path(sys.executable).parent
VERSION_1 = 1 << 32


@pytest.fixture
def machine(tmp_path, virtiofsd):
    sock, proc = virtiofsd
    kernel = tmp_path / "spin.bzImage"
    kernel.write_bytes(bzimage(b"", poweroff=False))
    kvm = Kvm()
    backend = Consoles(serial=ConsoleBackend("null"))
    config = VmConfig(payload=PayloadConfig(kernel=kernel),
                      memory=MemoryConfig(size=64 * MiB, shared=True, hotplug_size=GiB),
                      devices={"fs": (FsConfig(tag="myfs", socket=sock, id="myfs0"),)})
    m = Machine(kvm, config, backend, kvm.supported_cpuid(), plugins.load())
    yield m, proc
    m.close()
    backend.close()
    kvm.close()


def start_driver(t, queues):
    """Negotiate as Linux does (VERSION_1 and what the device offers), set up the queues
    on vectors 1.., DRIVER_OK."""
    wr(t, 0x14, 1, cc.ACKNOWLEDGE | cc.DRIVER)
    wr(t, 0x00, 4, 1)
    high = rd(t, 0x04, 4)
    wr(t, 0x00, 4, 0)
    low = rd(t, 0x04, 4)
    offered = high << 32 | low
    assert offered & VERSION_1 and not offered & (1 << 30)        # vhost-user's own bit is not the guest's
    wr(t, 0x08, 4, 1)
    wr(t, 0x0C, 4, high)
    wr(t, 0x08, 4, 0)
    wr(t, 0x0C, 4, low)
    wr(t, 0x14, 1, cc.ACKNOWLEDGE | cc.DRIVER | cc.FEATURES_OK)
    assert rd(t, 0x14, 1) & cc.FEATURES_OK
    assert rd(t, 0x12, 2) == len(queues)
    for index, q in enumerate(queues):
        wr(t, 0x16, 2, index)
        assert rd(t, 0x18, 2) == 1024
        wr(t, 0x18, 2, q.size)
        for offset, addr in ((0x20, q.desc), (0x28, q.avail), (0x30, q.used)):
            wr(t, offset, 4, addr & 0xFFFFFFFF)
            wr(t, offset + 4, 4, addr >> 32)
        wr(t, 0x1A, 2, index + 1)
        wr(t, 0x1C, 2, 1)
    wr(t, 0x14, 1, cc.ACKNOWLEDGE | cc.DRIVER | cc.FEATURES_OK | cc.DRIVER_OK)


def fuse_init(t, queue, unique):
    body = INIT_IN.pack(7, 31, 128 * 1024, 0, 0)
    head, [(reply, _)] = queue.add([IN_HEADER.pack(IN_HEADER.size + len(body), FUSE_INIT, unique, 0, 0, 0, 0, 0, 0)
                                    + body], [4096])
    wr(t, NOTIFY + 1 * NOTIFY_MULTIPLIER, 2, 1)         # the request queue's notify (the ioeventfd's address)
    deadline = time.monotonic() + 10
    while not (used := queue.take_used()):
        assert time.monotonic() < deadline, "virtiofsd answered nothing"
        time.sleep(0.01)
    assert used[0][0] == head
    return OUT_HEADER.unpack(t.memory.read(reply, OUT_HEADER.size)), reply


def test_the_guest_talks_to_virtiofsd_through_the_rings_and_new_ram(machine):
    m, _ = machine
    attached = m.devices.devices["myfs0"]
    t = attached.transport
    config = t.device.config_bytes()
    assert config == b"myfs".ljust(36, b"\0") + struct.pack("<I", 1)
    queues = [DriverQueue(m.memory, 0x100000 * (i + 1), 64) for i in range(2)]
    start_driver(t, queues)
    assert t.active and not t.broken
    (length, error, unique), _ = fuse_init(t, queues[1], 0xBEEF)
    assert (error, unique) == (0, 0xBEEF) and length > OUT_HEADER.size
    # RAM hot-added while running: virtiofsd has it (ADD_MEM_REG) before the guest is told,
    # and writes its answer there.
    m.memory_hotplug.resize(64 * MiB + 128 * MiB)
    dimm = m.memory.regions[-1].guest_addr
    queues[1].next_data, queues[1].data_end = dimm, dimm + MiB
    (length, error, unique), reply = fuse_init(t, queues[1], 0xCAFE)
    assert reply >= dimm and unique == 0xCAFE       # a second INIT is refused by FUSE, but it is answered
    # A driver reset stops the rings; the device can start again.
    wr(t, 0x14, 1, 0)
    assert not t.active


def request(queue, unique, opcode=3):              # FUSE_GETATTR by default
    return queue.add([IN_HEADER.pack(IN_HEADER.size + 16, opcode, unique, 1, 0, 0, 0, 0, 0) + bytes(16)], [256])


def test_a_killed_virtiofsd_breaks_the_device_and_nothing_else(machine):
    m, proc = machine
    t = m.devices.devices["myfs0"].transport
    queues = [DriverQueue(m.memory, 0x100000 * (i + 1), 64) for i in range(2)]
    start_driver(t, queues)
    assert fuse_init(t, queues[1], 7)[0][1] == 0
    # A request virtiofsd never sees (not kicked): still out when it dies.
    head, [(reply, _)] = request(queues[1], 0x51)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(5)
    deadline = time.monotonic() + 5
    while not rd(t, 0x14, 1) & cc.DEVICE_NEEDS_RESET:
        assert time.monotonic() < deadline, "the device did not notice virtiofsd's death"
        time.sleep(0.02)
    # plugvm answers it, and what comes after, with ENOTCONN: the guest's requests end.
    deadline = time.monotonic() + 5
    while not (used := queues[1].take_used()):
        assert time.monotonic() < deadline, "the request left by virtiofsd was not answered"
        time.sleep(0.02)
    assert used == [(head, 16)] and OUT_HEADER.unpack(m.memory.read(reply, 16)) == (16, -107, 0x51)
    head, [(reply, _)] = request(queues[1], 0x52)
    wr(t, NOTIFY + 1 * NOTIFY_MULTIPLIER, 2, 1)
    deadline = time.monotonic() + 5
    while not (used := queues[1].take_used()):
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert used == [(head, 16)] and OUT_HEADER.unpack(m.memory.read(reply, 16)) == (16, -107, 0x52)
    rng = m.devices.devices["__rng"].transport
    assert not rng.broken and rng.io.call(lambda: "served") == "served"
    # Its own I/O thread let go of the dead socket (no busy loop) and still serves.
    cpu = time.process_time()
    time.sleep(0.5)
    assert time.process_time() - cpu < 0.25 and t.io.call(lambda: "served") == "served"
    # Removal still releases everything, and the id can be used again.
    m.request_removal("myfs0")
    m.devices.eject(0, m.devices.devices["myfs0"].slot)
    assert "myfs0" not in m.devices.devices


def test_unshared_memory_and_a_socket_nobody_serves_are_refused(tmp_path, virtiofsd):
    sock, proc = virtiofsd
    memory = MemoryConfig(size=64 * MiB)
    from plugvm_virtio_fs import VirtioFs
    with pytest.raises(FsError, match="shared=on"):
        VirtioFs(FsConfig(tag="x", socket=sock), memory)
    assert proc.poll() is None                       # never connected
    start = time.monotonic()
    with pytest.raises(FsError, match="nobody.sock"):
        VirtioFs(FsConfig(tag="x", socket=tmp_path / "nobody.sock"), MemoryConfig(size=64 * MiB, shared=True),
                 hotplug=True)
    assert time.monotonic() - start < 10


def test_fs_without_shared_memory_is_one_line_and_exit_1(tmp_path):
    kernel = tmp_path / "k"
    kernel.write_bytes(bzimage(b"", poweroff=False))
    done = subprocess.run([BIN / "plugvm", "--kernel", str(kernel), "--memory", "size=64M",
                           "--fs", f"tag=myfs,socket={tmp_path / 'fs.sock'}"],
                          capture_output=True, text=True, timeout=60)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 1 and len(lines) == 1 and "shared=on" in lines[0], done.stderr


def test_a_reboot_hands_the_connection_to_the_next_boot(tmp_path, virtiofsd):
    """virtiofsd exits when its frontend hangs up, so a guest reboot must not hang up:
    the next boot's device with the same id takes the connection over, and its driver
    starts the rings again on the new boot's memory."""
    sock, proc = virtiofsd
    kernel = tmp_path / "spin.bzImage"
    kernel.write_bytes(bzimage(b"", poweroff=False))
    kvm = Kvm()
    backend = Consoles(serial=ConsoleBackend("null"))
    config = VmConfig(payload=PayloadConfig(kernel=kernel), memory=MemoryConfig(size=64 * MiB, shared=True),
                      devices={"fs": (FsConfig(tag="myfs", socket=sock, id="myfs0"),)})
    try:
        first = Machine(kvm, config, backend, kvm.supported_cpuid(), plugins.load())
        t = first.devices.devices["myfs0"].transport
        queues = [DriverQueue(first.memory, 0x100000 * (i + 1), 64) for i in range(2)]
        start_driver(t, queues)
        assert fuse_init(t, queues[1], 1)[0][1] == 0
        connection = t.device.connection
        handover = {}
        first.close(handover)
        assert handover == {"myfs0": connection}
        time.sleep(0.3)
        assert proc.poll() is None                   # still connected
        second = Machine(kvm, config, backend, kvm.supported_cpuid(), plugins.load(), handover=handover)
        try:
            assert handover == {}                    # claimed
            t = second.devices.devices["myfs0"].transport
            assert t.device.connection is connection
            queues = [DriverQueue(second.memory, 0x100000 * (i + 1), 64) for i in range(2)]
            start_driver(t, queues)
            (length, error, unique), _ = fuse_init(t, queues[1], 2)
            assert unique == 2 and error == 0        # virtiofsd reset its session with the rings
        finally:
            second.close()
        deadline = time.monotonic() + 5
        while proc.poll() is None:                   # a real close this time: virtiofsd goes
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        backend.close()
        kvm.close()
