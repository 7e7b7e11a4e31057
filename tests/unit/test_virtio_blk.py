"""virtio-blk's data path, driven in-process through a real split queue (no guest)."""

import struct

import pytest
from plugvm_virtio_blk import DiskError, VirtioBlk
from plugvm_virtio_blk.config import DiskConfig, from_json, parse

from plugvm.config import ConfigError
from plugvm.memory import GuestMemory
from plugvm.testing.virtq_driver import DriverQueue, RecordingContext

MiB = 1 << 20
T_IN, T_OUT, T_FLUSH, T_GET_ID, T_DISCARD = 0, 1, 4, 8, 11


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


def start(memory, config, event_idx=False):
    device = VirtioBlk(config)
    driver = DriverQueue(memory, 0x10000, 128, event_idx)
    context = RecordingContext()
    device.activate(memory, [driver.device_queue()], 0, context)
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
