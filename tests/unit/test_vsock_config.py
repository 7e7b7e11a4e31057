"""plugvm-vsock's config: cloud-hypervisor's --vsock syntax and `vsock` JSON, and its rules."""

from __future__ import annotations

import pytest

from plugvm.config.errors import ConfigError
from plugvm.plugins import Registry

import plugvm_vsock
from plugvm_vsock import VsockConfig, from_json, parse


def test_cli_and_json_round_trip(tmp_path):
    path = tmp_path / "v.sock"
    c = parse(f"cid=3,socket={path},id=test0,pci_segment=0,pci_device_id=6,iommu=off")
    assert (c.cid, c.socket, c.id, c.pci_device_id) == (3, path, "test0", 6)
    assert from_json(c.to_json()) == c
    # What ch-remote add-vsock sends.
    j = from_json({"cid": 4294967294, "socket": str(path), "iommu": False, "id": None, "pci_segment": 0})
    assert j == VsockConfig(cid=4294967294, socket=path)


@pytest.mark.parametrize("text, message", [
    ("socket=/tmp/nope", "cid is required"),
    ("cid=3", "socket is required"),
    ("cid=2,socket=/tmp/nope", "cid=2 is reserved"),
    ("cid=0,socket=/tmp/nope", "cid=0 is reserved"),
    ("cid=4294967295,socket=/tmp/nope", "is VMADDR_CID_ANY"),
    ("cid=4294967296,socket=/tmp/nope", "cid='4294967296' is out of range"),
    ("cid=x,socket=/tmp/nope", "cid='x' is not"),
    ("cid=3,socket=/tmp/nope,iommu=on", "iommu=on is not supported"),
    ("cid=3,socket=/tmp/nope,port=3", "unknown key 'port'"),
    ("cid=3,socket=/tmp/" + "x" * 200, "is too long for a unix socket"),
    ("cid=3,socket=/tmp/nope,pci_segment=65536", "pci_segment='65536' is out of range"),
])
def test_cli_refuses(text, message):
    with pytest.raises(ConfigError, match="^--vsock: .*" + message):
        parse(text)


@pytest.mark.parametrize("body, message", [
    ({"socket": "/tmp/nope"}, "cid"),
    ({"cid": 3}, "socket"),
    ({"cid": 1, "socket": "/tmp/nope"}, "cid=1 is reserved"),
    ({"cid": "3", "socket": "/tmp/nope"}, "is not an integer"),
    ({"cid": 3, "socket": ""}, "is not a path"),
    ({"cid": 3, "socket": "/tmp/nope", "iommu": True}, "iommu=on is not supported"),
])
def test_json_refuses(body, message):
    with pytest.raises(ConfigError, match="^vsock: .*" + message):
        from_json(body)


def test_an_existing_socket_path_is_refused_naming_it(tmp_path):
    path = tmp_path / "taken"
    path.write_text("")
    with pytest.raises(ConfigError, match=f"^--vsock: socket='{path}' already exists: plugvm creates"):
        parse(f"cid=3,socket={path}")
    with pytest.raises(ConfigError, match="^vsock: socket=.* already exists"):
        from_json({"cid": 3, "socket": str(path)})
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="already exists"):
        parse(f"cid=3,socket={tmp_path / 'dangling'}")


def test_device_type_is_one_per_vm_and_hot_pluggable():
    registry = Registry()
    registry.register(plugvm_vsock, "plugvm-vsock", "0.1.0")
    t = registry.by_option("--vsock")
    assert (t.name, t.kind, t.config_key, t.api_verb, t.id_prefix, t.multiple, t.removable) == (
        "vsock", "virtio", "vsock", "vm.add-vsock", "_vsock", False, True)


def test_what_plugvm_remote_add_vsock_sends_is_read(tmp_path):
    from plugvm_remote.configs import vsock_body
    body, fds = vsock_body(f"cid=3,socket={tmp_path / 'r.sock'},id=test0")
    assert fds == [] and from_json(body) == VsockConfig(cid=3, socket=tmp_path / "r.sock", id="test0")
