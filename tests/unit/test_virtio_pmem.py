"""plugvm-virtio-pmem: its config (cloud-hypervisor's --pmem and `pmem` JSON) and its
device driven in-process through a real split queue, with the core's DeviceMemory
over a recording VM (plugvm.testing.device_memory) in place of KVM."""

import os
import struct
from pathlib import Path

import pytest
from plugvm_virtio_pmem import PmemError, VirtioPmem, plugvm_device_types
from plugvm_virtio_pmem.config import PmemConfig, from_json, parse
from plugvm_virtio_pmem.device import create
from plugvm_remote.configs import pmem_body

from plugvm.config import ConfigError
from plugvm.device_manager import DeviceEnv
from plugvm.memory import GuestMemory
from plugvm.testing.device_memory import WINDOW_BASE, device_memory
from plugvm.testing.virtq_driver import DriverQueue, RecordingContext

MiB = 1 << 20
FLUSH, OK, EIO = 0, 0, 1


# --- config -------------------------------------------------------------------------------------

def test_cli_options_and_their_json_round_trip(tmp_path):
    config = parse(f"file={tmp_path}/p.img,size=4M,discard_writes=on,id=pm0,pci_device_id=7")
    assert config == PmemConfig(file=tmp_path / "p.img", size=4 * MiB, discard_writes=True, id="pm0",
                                pci_device_id=7)
    assert config.to_json() == {"file": f"{tmp_path}/p.img", "size": 4 * MiB, "discard_writes": True,
                                "iommu": False, "pci_segment": 0, "id": "pm0", "pci_device_id": 7}
    assert from_json(config.to_json()) == config
    bare = parse("file=p.img")
    assert (bare.size, bare.discard_writes, bare.id) == (None, False, None)
    assert from_json(bare.to_json()) == bare and bare.to_json()["size"] is None


def test_what_ch_remote_sends_is_accepted():
    body, fds = pmem_body("file=/tmp/pm,size=2M,discard_writes=on,id=test0")
    assert fds == [] and from_json(body) == PmemConfig(file=Path("/tmp/pm"), size=2 * MiB, discard_writes=True,
                                                       id="test0")


@pytest.mark.parametrize("text, message", [
    ("size=2M", "--pmem: file is required (file=PATH)"),
    ("file=p,size=3M", "--pmem: size='3M' is not a positive multiple of 2 MiB"),
    ("file=p,size=0", "--pmem: size='0' is not a positive multiple of 2 MiB"),
    ("file=p,size=2X", "--pmem: size='2X' is not a size"),
    ("file=p,discard_writes=maybe", "--pmem: discard_writes='maybe' is not on/off"),
    ("file=p,colour=red", "--pmem: unknown key 'colour'"),
    ("file=p,iommu=on", "--pmem: iommu=on is not supported"),
    ("file=p,pci_segment=65536", "--pmem: pci_segment='65536' is out of range"),
])
def test_cli_errors_name_the_option(text, message):
    with pytest.raises(ConfigError) as e:
        parse(text)
    assert str(e.value).startswith(message)


@pytest.mark.parametrize("body, message", [
    ({}, "pmem: missing field 'file'"),
    ({"file": "p", "size": 3 * MiB}, "pmem: size=3145728 is not a positive multiple of 2 MiB"),
    ({"file": "p", "size": "2M"}, "pmem: size='2M' is not an integer"),
    ({"file": "p", "discard_writes": 1}, "pmem: discard_writes=1 is not true or false"),
    ({"file": ""}, "pmem: file='' is not a path"),
])
def test_json_errors_name_the_field(body, message):
    with pytest.raises(ConfigError) as e:
        from_json(body)
    assert str(e.value).startswith(message)


def test_the_device_type_is_cloud_hypervisors():
    (t,) = plugvm_device_types()
    assert (t.name, t.cli_option, t.config_key, t.api_verb, t.id_prefix, t.multiple) == \
        ("pmem", "--pmem", "pmem", "vm.add-pmem", "_pmem", True)
    assert 50 < t.order < 70            # after fs, before vsock, as ch creates them


# --- the device ---------------------------------------------------------------------------------

@pytest.fixture
def memory():
    m = GuestMemory(4 * MiB)
    yield m
    m.close()


@pytest.fixture
def ranges():
    dm = device_memory()
    yield dm
    dm.close()


@pytest.fixture
def backing(tmp_path):
    path = tmp_path / "pmem.img"
    path.write_bytes(b"\x5a" * (4 * MiB))
    return path


def fds():
    return sorted(os.listdir("/proc/self/fd"))


def start(memory, device):
    driver = DriverQueue(memory, 0x10000, 256)
    context = RecordingContext()
    device.activate(memory, [driver.device_queue()], 0, context)
    return driver, context


def test_config_space_is_the_range_and_writes_through_it_reach_the_file(memory, ranges, backing):
    device = VirtioPmem(PmemConfig(file=backing, id="pm0"), ranges.for_device("pm0"))
    assert device.device_type == 27 and device.queue_sizes == (256,)
    (r,) = ranges.ranges("pm0")
    assert struct.unpack("<QQ", device.config_bytes()) == (r.guest_addr, 4 * MiB)
    assert r.guest_addr == WINDOW_BASE and r.guest_addr % (2 * MiB) == 0 and r.shared
    assert ranges.vm.slots == {r.slot: (r.guest_addr, 4 * MiB, False)}
    r.mapping[MiB:MiB + 5] = b"hello"               # what a vCPU's store does
    driver, context = start(memory, device)
    _, ((status, _),) = driver.add([struct.pack("<I", FLUSH)], [4])
    device.queue_notify(0)
    assert driver.take_used()[0][1] == 4 and memory.read(status, 4) == struct.pack("<I", OK)
    assert backing.read_bytes()[MiB:MiB + 5] == b"hello"
    assert context.interrupts == [0] and device.counters["flushes"] == 1
    device.close()
    assert ranges.ranges() == [] and ranges.vm.slots == {}
    device.close()                                  # twice: nothing more to free


def test_discard_writes_maps_privately_and_the_file_is_untouched(memory, ranges, backing):
    backing.chmod(0o444)                            # opened read-only: a read-only file is enough
    device = VirtioPmem(PmemConfig(file=backing, discard_writes=True), ranges.for_device("pm0"))
    (r,) = ranges.ranges()
    assert not r.shared
    r.mapping[0:4] = b"gone"
    driver, _ = start(memory, device)
    _, ((status, _),) = driver.add([struct.pack("<I", FLUSH)], [4])
    device.queue_notify(0)
    assert memory.read(status, 4) == struct.pack("<I", OK)
    device.close()
    assert backing.read_bytes()[:4] == b"\x5a" * 4


def test_a_directory_gets_a_temporary_file_of_size(memory, ranges, tmp_path):
    before = fds()
    device = VirtioPmem(PmemConfig(file=tmp_path, size=2 * MiB), ranges.for_device("pm0"))
    assert os.fstat(device.fd).st_size == 2 * MiB and os.listdir(tmp_path) == []    # O_TMPFILE: no name
    assert struct.unpack("<QQ", device.config_bytes())[1] == 2 * MiB
    device.close()
    assert fds() == before


def test_a_failing_flush_answers_eio_and_the_device_goes_on(memory, ranges, backing):
    device = VirtioPmem(PmemConfig(file=backing), ranges.for_device("pm0"))
    driver, _ = start(memory, device)
    # A real failing fsync: the file's descriptor replaced by a pipe's (fsync: EINVAL).
    saved = os.dup(device.fd)
    r, w = os.pipe()
    os.dup2(r, device.fd)
    try:
        _, ((status, _),) = driver.add([struct.pack("<I", FLUSH)], [4])
        device.queue_notify(0)
        assert memory.read(status, 4) == struct.pack("<I", EIO)
        assert device.counters["flush_errors"] == 1
    finally:
        os.dup2(saved, device.fd)
        for fd in (saved, r, w):
            os.close(fd)
    _, ((status, _),) = driver.add([struct.pack("<I", FLUSH)], [4])
    device.queue_notify(0)
    assert memory.read(status, 4) == struct.pack("<I", OK)
    device.close()


def test_a_hostile_guests_requests_are_answered_and_break_nothing(memory, ranges, backing):
    device = VirtioPmem(PmemConfig(file=backing), ranges.for_device("pm0"))
    driver, _ = start(memory, device)
    heads = [
        driver.add([struct.pack("<I", 7)], [4]),            # an unknown type: EIO, as ch
        driver.add([b"\0\0"], [4]),                         # a short request: nothing written
        driver.add([struct.pack("<I", FLUSH)], [2]),        # no room for the status
        driver.add([], [8]),                                # no request at all (the type in a writable buffer)
        driver.add([struct.pack("<I", FLUSH)], []),         # no status buffer
        driver.add([b"\0", b"\0\0", b"\0junk" * 1000], [1, 1, 2]),     # split anywhere: served
    ]
    for _, writable in heads[1:5]:
        for addr, size in writable:
            memory.write(addr, b"\xee" * size)
    device.queue_notify(0)
    used = driver.take_used()
    assert [length for _, length in used] == [4, 0, 0, 0, 0, 4]
    assert memory.read(heads[0][1][0][0], 4) == struct.pack("<I", EIO)
    assert memory.read(heads[1][1][0][0], 4) == b"\xee" * 4            # untouched
    split = heads[5][1]
    assert b"".join(memory.read(a, s) for a, s in split) == struct.pack("<I", OK)
    assert device.counters == {"flushes": 1, "flush_errors": 0, "bad_requests": 5}
    device.queue_notify(5)                                  # a queue that does not exist
    device.close()


@pytest.mark.parametrize("length, size, message", [
    (3 * MiB, None, "is 3145728 bytes, not a positive multiple of 2 MiB (give size=)"),
    (0, None, "is 0 bytes, not a positive multiple of 2 MiB"),
    (2 * MiB, 4 * MiB, "--pmem: size=4194304 bytes is larger than file="),
    (None, None, "--pmem: cannot open file="),                    # no such file
    ("dir", None, "is a directory: size is required"),
])
def test_a_bad_file_is_a_clear_error_and_leaves_no_fd_and_no_range(ranges, tmp_path, length, size, message):
    path = tmp_path / "pmem.img"
    if length == "dir":
        path = tmp_path
    elif length is not None:
        path.write_bytes(b"x" * length)
    before = fds()
    with pytest.raises(PmemError) as e:
        VirtioPmem(PmemConfig(file=path, size=size), ranges.for_device("pm0"))
    assert message in str(e.value)
    assert fds() == before and ranges.ranges() == [] and ranges.vm.slots == {}


def test_a_range_the_core_cannot_give_closes_the_file(ranges, backing):
    ranges.window.allocate(ranges.window.size, 1)           # the window is full
    before = fds()
    with pytest.raises(PmemError, match="cannot map file=.*no room in the 64-bit PCI window"):
        VirtioPmem(PmemConfig(file=backing), ranges.for_device("pm0"))
    assert fds() == before and ranges.vm.slots == {}


def test_the_factory_takes_the_ranges_from_the_env(ranges, backing):
    device = create(PmemConfig(file=backing), DeviceEnv(None, guest_ranges=ranges.for_device("_pmem0")))
    assert [r.device_id for r in ranges.ranges()] == ["_pmem0"]
    device.close()
    with pytest.raises(PmemError, match="guest_ranges"):
        create(PmemConfig(file=backing), DeviceEnv(None))
