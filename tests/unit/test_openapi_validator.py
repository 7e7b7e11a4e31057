"""plugvm.testing.openapi.ResponseValidator against hand-written responses."""

import copy
import json

import pytest

pytest.importorskip("openapi_core")

from plugvm.testing.openapi import (  # noqa: E402
    DEFAULT_SPEC_PATH,
    OpenApiMismatch,
    ResponseValidator,
    record,
)

PING = {
    "build_version": "v54.0.0",
    "version": "v54.0.0",
    "pid": 4242,
    "features": ["kvm", "io_uring"],
}

# Shaped like cloud-hypervisor's own vm.info: unset Options come out as null.
VM_INFO = {
    "config": {
        "cpus": {
            "boot_vcpus": 2,
            "max_vcpus": 4,
            "topology": None,
            "kvm_hyperv": False,
            "max_phys_bits": 46,
            "affinity": None,
            "features": {"amx": False},
            "nested": True,
        },
        "memory": {
            "size": 536870912,
            "mergeable": False,
            "hotplug_method": "Acpi",
            "hotplug_size": None,
            "hotplugged_size": None,
            "shared": False,
            "hugepages": False,
            "hugepage_size": None,
            "prefault": False,
            "zones": None,
            "thp": True,
        },
        "payload": {
            "firmware": None,
            "kernel": "/var/lib/plugvm/vmlinuz",
            "cmdline": "console=ttyS0 reboot=k panic=1",
            "initramfs": "/var/lib/plugvm/initrd.img",
        },
        "rate_limit_groups": None,
        "disks": None,
        "net": None,
        "rng": {"src": "/dev/urandom", "iommu": False},
        "balloon": None,
        "fs": None,
        "pmem": None,
        "serial": {"file": None, "mode": "Tty", "socket": None},
        "console": {"file": None, "mode": "Off", "iommu": False, "socket": None},
        "debug_console": {"file": None, "mode": "Off", "iobase": 233},
        "devices": None,
        "user_devices": None,
        "vdpa": None,
        "vsock": None,
        "pvpanic": False,
        "iommu": False,
        "numa": None,
        "watchdog": False,
        "platform": None,
        "tpm": None,
        "pci_segments": None,
        "landlock_enable": False,
        "landlock_rules": None,
    },
    "state": "Running",
    "memory_actual_size": 536870912,
    "device_tree": {
        "_virtio-pci-__rng": {
            "id": "_virtio-pci-__rng",
            "resources": [
                {"PciBar": {"index": 0, "base": 70368475742208, "size": 524288, "type_": "Mmio64", "prefetchable": False}}
            ],
            "parent": None,
            "children": ["__rng"],
            "pci_bdf": "0000:00:03.0",
        },
        "__rng": {
            "id": "__rng",
            "resources": [],
            "parent": "_virtio-pci-__rng",
            "children": [],
            "pci_bdf": None,
        },
    },
}

COUNTERS = {
    "__rng": {"read_bytes": 4096, "read_ops": 2},
    "_disk0": {"read_bytes": 0, "write_bytes": 512, "read_ops": 0, "write_ops": 1},
}


@pytest.fixture(scope="module")
def validator():
    return ResponseValidator()


def _bad(validator, *args, **kwargs) -> str:
    with pytest.raises(OpenApiMismatch) as info:
        validator.validate(*args, **kwargs)
    assert isinstance(info.value, AssertionError)
    return str(info.value)


def test_default_spec_is_vendored_in_the_package(validator):
    assert DEFAULT_SPEC_PATH.is_file()
    assert "plugvm" in DEFAULT_SPEC_PATH.parts or DEFAULT_SPEC_PATH.parent.name == "data"
    assert validator.base_path == "/api/v1"
    assert ("GET", "/api/v1/vm.info") in validator.operations()
    assert ("PUT", "/api/v1/vm.add-disk") in validator.operations()


def test_ping_ok(validator):
    validator.validate("GET", "/api/v1/vmm.ping", 200, json.dumps(PING).encode())
    validator.validate("get", "/api/v1/vmm.ping", 200, '{"version": "0.1.0"}', "application/json; charset=utf-8")


def test_ping_wrong_type(validator):
    msg = _bad(validator, "GET", "/api/v1/vmm.ping", 200, json.dumps({**PING, "pid": "4242"}))
    assert "pid" in msg and "integer" in msg


def test_ping_missing_required(validator):
    msg = _bad(validator, "GET", "/api/v1/vmm.ping", 200, json.dumps({"pid": 1}))
    assert "version" in msg


def test_ping_empty_200_body(validator):
    assert "empty body" in _bad(validator, "GET", "/api/v1/vmm.ping", 200, b"")


def test_ping_wrong_content_type(validator):
    _bad(validator, "GET", "/api/v1/vmm.ping", 200, json.dumps(PING), "text/plain")


def test_vm_info_ok(validator):
    validator.validate("GET", "/api/v1/vm.info", 200, json.dumps(VM_INFO))


def test_vm_info_bogus_state(validator):
    info = copy.deepcopy(VM_INFO)
    info["state"] = "Bogus"
    msg = _bad(validator, "GET", "/api/v1/vm.info", 200, json.dumps(info))
    assert "Bogus" in msg and "state" in msg


def test_vm_info_null_required_member_is_still_missing(validator):
    info = copy.deepcopy(VM_INFO)
    info["config"]["payload"] = None
    assert "payload" in _bad(validator, "GET", "/api/v1/vm.info", 200, json.dumps(info))


def test_vm_info_bad_nested_value(validator):
    info = copy.deepcopy(VM_INFO)
    info["device_tree"]["__rng"]["pci_bdf"] = 3
    assert "pci_bdf" in _bad(validator, "GET", "/api/v1/vm.info", 200, json.dumps(info))


def test_counters(validator):
    validator.validate("GET", "/api/v1/vm.counters", 200, json.dumps(COUNTERS))
    bad = {"__rng": {"read_bytes": "4096"}}
    _bad(validator, "GET", "/api/v1/vm.counters", 200, json.dumps(bad))


def test_204_empty_ok(validator):
    validator.validate("PUT", "/api/v1/vm.boot", 204, b"", None)
    validator.validate("PUT", "/api/v1/vm.pause", 204, None)
    # a cold add answers 204 too
    validator.validate("PUT", "/api/v1/vm.add-disk", 204, b"")


def test_204_with_body(validator):
    assert "204" in _bad(validator, "PUT", "/api/v1/vm.boot", 204, b"{}")


def test_add_disk_200_pci_device_info(validator):
    validator.validate("PUT", "/api/v1/vm.add-disk", 200, '{"id":"_disk0","bdf":"0000:00:04.0"}')
    assert "bdf" in _bad(validator, "PUT", "/api/v1/vm.add-disk", 200, '{"id":"_disk0"}')


def test_unlisted_2xx_status(validator):
    assert "not listed" in _bad(validator, "PUT", "/api/v1/vm.boot", 200, b"{}")


def test_error_array_with_unlisted_500_ok(validator):
    # vm.pause lists only 204/404/405; cloud-hypervisor answers VmNotRunning with 500
    body = json.dumps(["Error from API", "The VM could not be paused", "VM is not running"])
    validator.validate("PUT", "/api/v1/vm.pause", 500, body)
    validator.validate("GET", "/api/v1/vm.counters", 500, body)


def test_error_listed_status_ok(validator):
    validator.validate("GET", "/api/v1/vm.info", 404, '["Error from API","The VM is not created"]')


def test_error_body_object(validator):
    msg = _bad(validator, "PUT", "/api/v1/vm.pause", 500, '{"error": "VM is not running"}')
    assert "array of strings" in msg


def test_error_body_not_json_or_not_strings(validator):
    _bad(validator, "PUT", "/api/v1/vm.pause", 500, b"")
    _bad(validator, "PUT", "/api/v1/vm.pause", 500, b"Internal Server Error")
    _bad(validator, "PUT", "/api/v1/vm.pause", 500, b'["ok", 3]')


def test_error_status_never_emitted(validator):
    assert "418" in _bad(validator, "PUT", "/api/v1/vm.pause", 418, b'["teapot"]')


def test_unknown_path(validator):
    assert "unknown path" in _bad(validator, "GET", "/api/v1/vm.bogus", 200, b"{}")
    _bad(validator, "GET", "/api/v1/vm.bogus", 404, b'["Not Found"]')
    assert "API root" in _bad(validator, "GET", "/vmm.ping", 200, json.dumps(PING))


def test_wrong_method(validator):
    msg = _bad(validator, "GET", "/api/v1/vm.boot", 204, b"")
    assert "method GET" in msg
    # ...but cloud-hypervisor's 400 answer to a wrong method is fine
    validator.validate("GET", "/api/v1/vm.boot", 400, b'["Bad Request"]')


def test_seen_records_every_call():
    v = ResponseValidator()
    v.validate("GET", "/api/v1/vmm.ping", 200, json.dumps(PING))
    with pytest.raises(OpenApiMismatch):
        v.validate("PUT", "/api/v1/vm.boot", 204, b"x")
    assert v.seen == [("GET", "/api/v1/vmm.ping", 200), ("PUT", "/api/v1/vm.boot", 204)]
    assert ("GET", "/api/v1/vmm.ping") not in v.unseen_operations()
    assert ("GET", "/api/v1/vm.info") in v.unseen_operations()


def test_record_httpx_response(validator):
    httpx = pytest.importorskip("httpx")
    request = httpx.Request("GET", "http://localhost/api/v1/vm.info")
    ok = httpx.Response(200, json=VM_INFO, request=request)
    assert record(validator, ok) is ok
    bad = httpx.Response(200, json={**VM_INFO, "state": "Bogus"}, request=request)
    with pytest.raises(OpenApiMismatch):
        record(validator, bad)
    gone = httpx.Response(204, request=httpx.Request("PUT", "http://localhost/api/v1/vm.shutdown"))
    record(validator, gone)
