"""plugvm-virtio-fs's --fs option and `fs` JSON: cloud-hypervisor's fields and defaults,
and bad input refused naming the field."""

from pathlib import Path

import pytest
from plugvm_virtio_fs.config import FsConfig, from_json, parse
from plugvm_virtio_fs.device import VirtioFs

from plugvm.config import ConfigError


def test_defaults_are_cloud_hypervisors():
    config = parse("tag=myfs,socket=/tmp/fs.sock")
    assert config == FsConfig(tag="myfs", socket=Path("/tmp/fs.sock"), num_queues=1, queue_size=1024)
    assert from_json({"tag": "myfs", "socket": "/tmp/fs.sock"}) == config


def test_every_field_round_trips_through_json():
    config = parse("tag=data,socket=/run/v.sock,num_queues=2,queue_size=256,id=myfs0,pci_device_id=7")
    assert config.to_json() == {"tag": "data", "socket": "/run/v.sock", "num_queues": 2, "queue_size": 256,
                                "iommu": False, "pci_segment": 0, "id": "myfs0", "pci_device_id": 7}
    assert from_json(config.to_json()) == config


@pytest.mark.parametrize("text, words", [
    ("socket=/tmp/s", ["tag is required"]),
    ("tag=x", ["socket is required"]),
    ("tag=" + "t" * 37 + ",socket=/s", ["tag=", "36 bytes"]),
    ("tag=" + "é" * 19 + ",socket=/s", ["36 bytes"]),            # 38 bytes of UTF-8
    ("tag=x,socket=/s,num_queues=0", ["num_queues=0"]),
    ("tag=x,socket=/s,queue_size=1000", ["queue_size=1000", "power of two"]),
    ("tag=x,socket=/s,dax=on", ["unknown key 'dax'"]),
    ("tag=x,socket=/s,pci_segment=65536", ["pci_segment=", "out of range"]),
])
def test_bad_options_name_the_field(text, words):
    with pytest.raises(ConfigError) as e:
        parse(text)
    assert str(e.value).startswith("--fs: ") and all(w in str(e.value) for w in words), str(e.value)


@pytest.mark.parametrize("body, words", [
    ({"socket": "/s"}, ["missing field 'tag'"]),
    ({"tag": "t" * 37, "socket": "/s"}, ["36 bytes"]),
    ({"tag": "x", "socket": "/s", "dax": True}, ["dax"]),
    ({"tag": "x", "socket": "/s", "queue_size": "big"}, ["queue_size"]),
])
def test_bad_json_names_the_field(body, words):
    with pytest.raises(ConfigError) as e:
        from_json(body)
    assert all(w in str(e.value) for w in words), str(e.value)


def test_old_clients_dax_fields_at_their_defaults_are_accepted():
    assert from_json({"tag": "x", "socket": "/s", "dax": False, "cache_size": None}).tag == "x"


def test_the_config_space_is_the_tag_and_the_request_queue_count():
    device = VirtioFs.__new__(VirtioFs)          # no virtiofsd needed for the layout
    device.config = parse("tag=abc,socket=/s,num_queues=3")
    data = device.config_bytes()
    assert data == b"abc" + bytes(33) + (3).to_bytes(4, "little") and len(data) == 40
