"""virtio-blk's data path, driven in-process through a real split queue (no guest):
every test twice, with reads and writes served in C (blk.c, the default) and with
PLUGVM_BLK_C=off (every request in Python), which must answer alike."""

import os
import struct

import pytest
from plugvm_virtio_blk import DiskError, VirtioBlk
from plugvm_virtio_blk.config import DiskConfig, from_json, parse

from plugvm.config import ConfigError
from plugvm.memory import GuestMemory
from plugvm.testing.virtq_driver import DriverQueue, RecordingContext
from plugvm.virtio.queue import VirtqueueError

MiB = 1 << 20
T_IN, T_OUT, T_FLUSH, T_GET_ID, T_DISCARD = 0, 1, 4, 8, 11


@pytest.fixture(scope="module", autouse=True, params=["C", "Python"])
def path(request):
    """Which path serves reads and writes: PLUGVM_BLK_C unset (C) or off."""
    before = os.environ.pop("PLUGVM_BLK_C", None)
    if request.param == "Python":
        os.environ["PLUGVM_BLK_C"] = "off"
    try:
        yield request.param
    finally:
        os.environ.pop("PLUGVM_BLK_C", None)
        if before is not None:
            os.environ["PLUGVM_BLK_C"] = before


@pytest.fixture
def memory():
    m = GuestMemory(4 * MiB)
    yield m
    m.close()


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(bytes(range(256)) * (4 * MiB // 256))
    return path


def start(memory, config, event_idx=False, size=128, data_size=1 << 20):
    device = VirtioBlk(config)
    driver = DriverQueue(memory, 0x10000, size, event_idx, data_size)
    context = RecordingContext()
    device.activate(memory, [driver.device_queue()], 0, context)
    # The path the module's fixture chose is the one taken.
    assert (device._fast is not None) == (os.environ.get("PLUGVM_BLK_C") != "off")
    return device, driver, context


def request(kind, sector):
    return struct.pack("<IIQ", kind, 0, sector)


def test_read_write_flush_and_get_id(memory, image):
    device, driver, context = start(memory, DiskConfig(path=image, serial="SN-1"))
    head, (data, status) = driver.add([request(T_IN, 1)], [1024, 1])
    _, (status_w,) = driver.add([request(T_OUT, 8), b"\xAA" * 512, b"\xBB" * 512], [1])
    _, (status_f,) = driver.add([request(T_FLUSH, 0)], [1])
    _, (serial, status_id) = driver.add([request(T_GET_ID, 0)], [20, 1])
    device.queue_notify(0)
    used = driver.take_used()
    assert used == [(head, 1025), (used[1][0], 1), (used[2][0], 1), (used[3][0], 21)]
    assert memory.read(data[0], 1024) == image.read_bytes()[512:1536]
    assert [memory.read(s[0], 1) for s in (status, status_w, status_f, status_id)] == [b"\0"] * 4
    assert image.read_bytes()[8 * 512:9 * 512] == b"\xAA" * 512
    assert image.read_bytes()[9 * 512:10 * 512] == b"\xBB" * 512
    assert memory.read(serial[0], 20) == b"SN-1".ljust(20, b"\0")
    assert context.interrupts == [0]
    assert device.counters == {"read_bytes": 1024, "write_bytes": 1024, "read_ops": 1, "write_ops": 1}
    device.close()


def test_readonly_refuses_writes_and_the_file_stays(memory, image):
    before = image.read_bytes()
    device, driver, _ = start(memory, DiskConfig(path=image, readonly=True))
    assert device.device_features() & (1 << 5)           # VIRTIO_BLK_F_RO
    _, (status,) = driver.add([request(T_OUT, 8), b"\xAA" * 512], [1])
    device.queue_notify(0)
    assert memory.read(status[0], 1) == b"\x01"           # VIRTIO_BLK_S_IOERR
    assert image.read_bytes() == before
    device.close()


@pytest.mark.parametrize("chain", [
    ([request(T_IN, 4 * MiB // 512)], [512, 1]),           # past the end
    ([request(T_IN, 4 * MiB // 512 - 1)], [1024, 1]),      # straddles the end
    ([request(T_IN, 0)], [100, 1]),                        # not whole sectors
    ([request(T_OUT, 0), b"x" * 512], [1]),                # sector 0 of an autodetected raw image
    ([request(T_OUT, 2**62), b"x" * 512], [1]),            # absurd sector
    ([request(T_IN, 2**64 - 1)], [512, 1]),                # a sector whose byte offset overflows 64 bits
    ([request(T_OUT, 2**55)], [1]),                        # an offset of exactly 2^64, no data
])
def test_bad_requests_fail_with_ioerr(memory, image, chain):
    before = image.read_bytes()
    device, driver, _ = start(memory, DiskConfig(path=image))
    _, writable = driver.add(*chain)
    device.queue_notify(0)
    assert memory.read(writable[-1][0], 1) == b"\x01"
    assert image.read_bytes() == before
    device.close()


def test_unknown_request_is_unsupported_and_short_chains_are_answered(memory, image):
    device, driver, _ = start(memory, DiskConfig(path=image))
    _, (status,) = driver.add([request(T_DISCARD, 0), bytes(16)], [1])
    head, _ = driver.add([b"short"], [1])                  # no room for a header
    device.queue_notify(0)
    assert memory.read(status[0], 1) == b"\x02"
    assert driver.take_used()[-1] == (head, 0)
    device.close()


def test_config_space_reports_capacity_and_queues(image):
    device = VirtioBlk(DiskConfig(path=image, num_queues=2, queue_size=64))
    capacity, = struct.unpack_from("<Q", device.config_bytes())
    num_queues, = struct.unpack_from("<H", device.config_bytes(), 34)
    assert (capacity, num_queues, device.queue_sizes) == (4 * MiB // 512, 2, (64, 64))
    device.close()


def test_missing_and_locked_images_are_clear_errors(tmp_path, image):
    with pytest.raises(DiskError, match=r"--disk: cannot open path='.*nope.img': No such file"):
        VirtioBlk(DiskConfig(path=tmp_path / "nope.img"))
    first = VirtioBlk(DiskConfig(path=image))
    try:
        import subprocess, sys
        # Another process (locks are per process) cannot open the image for writing.
        code = ("from plugvm_virtio_blk import VirtioBlk; from plugvm_virtio_blk.config import DiskConfig; "
                f"VirtioBlk(DiskConfig(path={str(image)!r}))")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert result.returncode != 0 and "locked by another process" in result.stderr
    finally:
        first.close()


def test_cli_and_json_configs():
    config = parse("path=/x.img,readonly=on,direct=off,id=d1,serial=S,num_queues=2,queue_size=64,pci_device_id=5")
    assert config == DiskConfig(path=__import__("pathlib").Path("/x.img"), readonly=True, id="d1", serial="S",
                                num_queues=2, queue_size=64, pci_device_id=5)
    assert from_json(config.to_json()) == config
    # What ch-remote sends: every field, the ones plugvm lacks at ch's defaults.
    assert from_json({"path": "/x.img", "readonly": False, "direct": False, "iommu": False, "num_queues": 1,
                      "queue_size": 128, "vhost_user": False, "vhost_socket": None, "id": None, "pci_segment": 0,
                      "rate_limit_group": None, "rate_limiter_config": None, "serial": None, "queue_affinity": None,
                      "disable_io_uring": False, "disable_aio": False, "backing_files": False, "sparse": True,
                      "image_type": "Unknown"}).path.name == "x.img"


@pytest.mark.parametrize("text, message", [
    ("readonly=on", "--disk: path is required"),
    ("path=/x,colour=red", "--disk: unknown key 'colour'"),
    ("path=/x,queue_size=100", "--disk: queue_size=100 must be a power of two"),
    ("path=/x,num_queues=0", "--disk: num_queues=0 must be at least 1"),
    ("path=/x,vhost_user=on", "--disk: vhost_user is not supported"),
    ("path=/x,id=__mine", "--disk: id='__mine' may not start with '__'"),
    ("path=/x,pci_device_id=0", "--disk: pci_device_id=0 is not a free device slot"),
    ("path=/x,serial=abcdefghijklmnopqrstuvwxyz", "--disk: serial='abcdefghijklmnopqrstuvwxyz' is longer than 20"),
])
def test_bad_cli_configs(text, message):
    with pytest.raises(ConfigError, match="^" + __import__("re").escape(message)):
        parse(text)


def test_bad_json_configs():
    with pytest.raises(ConfigError, match="vhost_user=true is not supported"):
        from_json({"path": "/x", "vhost_user": True})
    # An unknown field is ignored, as cloud-hypervisor's serde ignores it (and warned about).
    assert from_json({"path": "/x", "colour": 1}) == from_json({"path": "/x"})


def test_other_shapes_are_answered_as_linux_shaped_ones(memory, image):
    """A header split over two buffers and the status inside the data's buffer: blk.c
    hands such a request back, and device.py answers it the same."""
    device, driver, _ = start(memory, DiskConfig(path=image))
    head, ((data, length),) = driver.add([request(T_IN, 2)[:5], request(T_IN, 2)[5:]], [513])
    _, (status_w,) = driver.add([request(T_OUT, 16) + b"\xCC" * 512], [1])
    device.queue_notify(0)
    assert driver.take_used()[0] == (head, 513)
    assert memory.read(data, 512) == image.read_bytes()[1024:1536] and memory.read(data + 512, 1) == b"\0"
    assert memory.read(status_w[0], 1) == b"\0" and image.read_bytes()[16 * 512:17 * 512] == b"\xCC" * 512
    assert device.counters == {"read_bytes": 512, "write_bytes": 512, "read_ops": 1, "write_ops": 1}
    device.close()


def test_more_buffers_than_one_preadv_takes_is_an_ioerr_not_a_crash(memory, image):
    """1100 data buffers: more than IOV_MAX (1024). C hands the request back whole and the
    Python path's preadv refuses it, so the guest gets IOERR and the next request is served."""
    device, driver, _ = start(memory, DiskConfig(path=image), size=2048, data_size=2 * MiB)
    _, writable = driver.add([request(T_IN, 0)], [512] * 1100 + [1])
    _, (data, status) = driver.add([request(T_IN, 1)], [512, 1])
    device.queue_notify(0)
    assert memory.read(writable[-1][0], 1) == b"\x01"
    assert memory.read(status[0], 1) == b"\0" and memory.read(data[0], 512) == image.read_bytes()[512:1024]
    device.close()


def test_a_failing_preadv_is_an_ioerr_and_is_logged(memory, image, capsys):
    """The image's fd turned write-only under the device: preadv's EBADF."""
    device, driver, _ = start(memory, DiskConfig(path=image))
    write_only = os.open(image, os.O_WRONLY)
    os.dup2(write_only, device.fd)
    os.close(write_only)
    _, (data, status) = driver.add([request(T_IN, 0)], [512, 1])
    device.queue_notify(0)
    assert memory.read(status[0], 1) == b"\x01"
    logged = capsys.readouterr()
    assert "disk I/O failed" in logged.out + logged.err and "Bad file descriptor" in logged.out + logged.err
    assert device.counters["read_ops"] == 0
    device.close()


def test_a_broken_chain_raises_after_the_requests_before_it_are_answered(memory, image):
    """The guest breaks the queue's rules (a buffer outside its RAM): VirtqueueError, which
    the transport turns into NEEDS_RESET; what came before it was answered."""
    device, driver, _ = start(memory, DiskConfig(path=image))
    head, (data, status) = driver.add([request(T_IN, 0)], [512, 1])
    bad, _ = driver.add([request(T_IN, 0)], [512, 1])
    driver.memory.write(driver.desc + 16 * ((bad + 1) % driver.size), struct.pack("<Q", 64 * MiB))
    with pytest.raises(VirtqueueError, match="not in guest RAM"):
        device.queue_notify(0)
    assert driver.take_used() == [(head, 513)]
    assert memory.read(data[0], 512) == image.read_bytes()[:512]
    device.close()
