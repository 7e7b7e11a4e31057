"""The vhost-user frontend against the real QEMU virtiofsd (Debian's /usr/lib/qemu/virtiofsd,
libvhost-user), started as users start it: negotiation, the memory table from shared
guest RAM, and a FUSE_INIT request that virtiofsd answers through the rings on its own
(no Python between the kick and the call). Then a virtiofsd killed mid-session."""

import os
import select
import signal
import struct
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from plugvm.memory import Backing, GuestMemory
from plugvm.testing.virtq_driver import DriverQueue
from plugvm.vhost_user import BackendGone, Frontend, MemoryTable, ProtocolFeature, VringConfig
from plugvm.vhost_user.protocol import protocol_feature_names

VIRTIOFSD = Path("/usr/lib/qemu/virtiofsd")
VIRTIO_F_VERSION_1 = 1 << 32
MiB = 1 << 20



@pytest.fixture(autouse=True)
def _needs_virtiofsd_and_root():
    # Fail, never skip: CI installs virtiofsd (qemu-system-common) and runs as root.
    if not VIRTIOFSD.exists():
        pytest.fail(f"{VIRTIOFSD} is not installed (Debian: qemu-system-common)")
    if os.geteuid() != 0:
        pytest.fail("virtiofsd's namespace sandbox needs root, as CI runs")

# FUSE (include/uapi/linux/fuse.h): fuse_in_header, fuse_init_in (7.36: 64 bytes), fuse_out_header.
FUSE_INIT = 26
IN_HEADER = struct.Struct("<IIQQIIIHH")     # len, opcode, unique, nodeid, uid, gid, pid, total_extlen, padding
INIT_IN = struct.Struct("<IIIII44x")        # major, minor, max_readahead, flags, flags2, unused[11]
OUT_HEADER = struct.Struct("<IiQ")          # len, error, unique


@pytest.fixture
def virtiofsd():
    """(socket path, the process): virtiofsd serving a fresh directory; stopped after."""
    # Not tmp_path: a unix socket path must stay under 108 bytes.
    work = Path(tempfile.mkdtemp(prefix="plugvm-vu-"))
    (work / "shared").mkdir()
    (work / "shared" / "hello.txt").write_text("hello\n")
    sock = work / "vhost.sock"
    log = open(work / "virtiofsd.log", "w")
    proc = subprocess.Popen([str(VIRTIOFSD), f"--socket-path={sock}", "-o", f"source={work / 'shared'}",
                             "-o", "cache=none"], stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)      # its own group: its sandbox child dies with it
    yield sock, proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    log.close()
    for path in sorted(work.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    work.rmdir()


@pytest.fixture
def memory():
    m = GuestMemory(64 * MiB, backing=Backing(shared=True))
    yield m
    m.close()


def test_negotiation_with_virtiofsd(virtiofsd):
    sock, _ = virtiofsd
    frontend = Frontend.connect(sock, timeout=10)
    try:
        result = frontend.negotiate(queues=2)
    finally:
        frontend.close()
    print(f"virtiofsd offers protocol features {protocol_feature_names(result.offered_protocol_features)}, "
          f"virtio features {result.features:#x}, queue_num {result.queue_num}, "
          f"max_mem_slots {result.max_mem_slots}")
    for wanted in (ProtocolFeature.MQ, ProtocolFeature.REPLY_ACK, ProtocolFeature.CONFIGURE_MEM_SLOTS):
        assert result.protocol_features & wanted.mask, wanted.name
    assert result.features & VIRTIO_F_VERSION_1
    assert result.queue_num >= 2        # hiprio + one request queue


def _start(frontend, memory):
    """Negotiate and activate virtio-fs's two queues (0 hiprio, 1 requests) on eventfds."""
    frontend.negotiate(queues=2)
    table = MemoryTable.of(memory)
    drivers = [DriverQueue(memory, 0x100000 * (i + 1), 64) for i in range(2)]
    kicks = [os.eventfd(0, os.EFD_CLOEXEC) for _ in drivers]
    calls = [os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK) for _ in drivers]
    queues = [VringConfig(i, q.size, table.user_address(q.desc, 16 * q.size),
                          table.user_address(q.avail, 6 + 2 * q.size), table.user_address(q.used, 6 + 8 * q.size),
                          kicks[i], calls[i]) for i, q in enumerate(drivers)]
    frontend.activate(VIRTIO_F_VERSION_1, table.regions, queues)
    return drivers, kicks, calls


def _wait_used(driver, call_fd, timeout=10.0):
    """What the device used, once the call eventfd says so. libvhost-user also writes the
    call eventfd when SET_VRING_CALL hands it over, so a signal may come with nothing used."""
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        if select.select([call_fd], [], [], left)[0]:
            os.eventfd_read(call_fd)
            if used := driver.take_used():
                return used
    raise AssertionError("virtiofsd used nothing within the timeout")


def test_fuse_init_through_the_rings(virtiofsd, memory):
    sock, _ = virtiofsd
    frontend = Frontend.connect(sock, timeout=10)
    drivers, kicks, calls = _start(frontend, memory)
    try:
        request = drivers[1]
        unique = 0xC0FFEE
        body = INIT_IN.pack(7, 31, 128 * 1024, 0, 0)
        head, [(reply_addr, _)] = request.add([IN_HEADER.pack(IN_HEADER.size + len(body), FUSE_INIT, unique,
                                                              0, 0, 0, 0, 0, 0) + body], [4096])
        os.eventfd_write(kicks[1], 1)
        [(used_head, used_len)] = _wait_used(request, calls[1])
        length, error, reply_unique = OUT_HEADER.unpack(memory.read(reply_addr, OUT_HEADER.size))
        assert (used_head, reply_unique, error) == (head, unique, 0)
        assert length == used_len > OUT_HEADER.size
        major, minor = struct.unpack("<II", memory.read(reply_addr + OUT_HEADER.size, 8))
        assert major == 7 and minor >= 31

        bases = frontend.deactivate([0, 1])
        assert bases == {0: 0, 1: 1}        # the request queue consumed one chain
    finally:
        frontend.close()
        for fd in kicks + calls:
            os.close(fd)


def test_a_killed_virtiofsd_is_backend_gone_promptly(virtiofsd, memory):
    sock, proc = virtiofsd
    frontend = Frontend.connect(sock, timeout=10, reply_timeout=10)
    drivers, kicks, calls = _start(frontend, memory)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
        assert select.select([frontend], [], [], 5)[0], "no EOF on the socket after virtiofsd died"
        start = time.monotonic()
        with pytest.raises(BackendGone):
            frontend.set_vring_enable(1, False)     # a REPLY_ACK'd request
        with pytest.raises(BackendGone):
            frontend.get_features()
        assert time.monotonic() - start < 1, "a dead backend should fail at once, not at the reply timeout"
        assert frontend.deactivate([0, 1]) == {}
    finally:
        frontend.close()
        for fd in kicks + calls:
            os.close(fd)
