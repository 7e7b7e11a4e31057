"""The JSON API reads VM configs as cloud-hypervisor's serde does: fields it does not know
are ignored, each logged once as a warning naming it; fields of ch's spec for what plugvm
lacks are accepted at values that ask for nothing, and refused naming them otherwise.
The command line stays strict (tests/unit/test_config.py)."""

import json

import pytest
from structlog.testing import capture_logs

from plugvm.config import json_fields
from plugvm.config.errors import ConfigError
from plugvm.config.vm import VmConfig

GiB = 1 << 30


@pytest.fixture(autouse=True)
def fresh_warnings(monkeypatch):
    # "Once" is per process; each test starts with none warned.
    monkeypatch.setattr(json_fields, "_warned", set())


@pytest.fixture
def files(tmp_path):
    kernel = tmp_path / "vmlinux.container"
    kernel.write_bytes(b"\x7fELF" + bytes(60))
    image = tmp_path / "kata-containers.img"
    image.write_bytes(bytes(1 << 20))
    return kernel, image


def kata_body(kernel, image, tmp_path):
    """Kata's vm.create body with its defaults (reference kata-clh.md §4), sorted and compact
    as its client sends it; `H` = 4 host CPUs, `M` = 8 GiB."""
    return json.loads(json.dumps({
        "console": {"iommu": False, "mode": "Off"},
        "cpus": {"boot_vcpus": 1, "kvm_hyperv": False, "max_vcpus": 4, "nested": True,
                 "topology": {"cores_per_die": 4, "dies_per_package": 1, "packages": 1, "threads_per_core": 1}},
        "disks": [{"backing_files": False, "direct": False, "image_type": "Raw", "iommu": False, "num_queues": 1,
                   "queue_size": 128, "path": str(image), "readonly": True, "sparse": True, "vhost_user": False}],
        "fs": [{"num_queues": 1, "pci_segment": 1, "queue_size": 1024, "socket": str(tmp_path / "virtiofsd.sock"),
                "tag": "kataShared"}],
        "iommu": False, "landlock_enable": False,
        "memory": {"hotplug_method": "Acpi", "hotplug_size": 8 * GiB, "hugepages": False, "mergeable": False,
                   "prefault": False, "shared": True, "size": 2 * GiB, "thp": True},
        "pvpanic": False, "watchdog": False,
        "payload": {"cmdline": "root=/dev/vda1 quiet", "kernel": str(kernel)},
        "platform": {"num_pci_segments": 2, "sev_snp": False, "tdx": False},
        "rng": {"iommu": False, "src": "/dev/urandom"},
        "serial": {"iommu": False, "mode": "Off"},
        "vsock": {"cid": 3, "iommu": False, "socket": str(tmp_path / "clh.sock")},
    }, sort_keys=True))


def test_katas_default_body_is_read_whole(files, tmp_path):
    kernel, image = files
    with capture_logs() as logs:
        vm = VmConfig.from_json(kata_body(kernel, image, tmp_path))
    # Every field Kata sends is one plugvm reads: none is ignored.
    assert [e for e in logs if e["event"] == "unknown JSON field ignored"] == []
    assert (vm.cpus.max_vcpus, vm.memory.hotplug_size, vm.devices["vsock"].cid) == (4, 8 * GiB, 3)
    assert vm.platform.num_pci_segments == 2 and vm.devices["fs"][0].pci_segment == 1


def test_unknown_fields_are_ignored_and_each_warned_once(files, tmp_path):
    kernel, image = files
    body = kata_body(kernel, image, tmp_path)
    body["frobnicators"] = [1]
    body["serial"]["colour"] = "red"
    body["disks"][0]["lock_granularity_v2"] = "Full"
    with capture_logs() as logs:
        vm = VmConfig.from_json(body)
        again = VmConfig.from_json(body)
    assert vm == again == VmConfig.from_json(kata_body(kernel, image, tmp_path))
    warned = sorted(e["field"] for e in logs if e["event"] == "unknown JSON field ignored")
    assert warned == ["VmConfig.frobnicators", "disks.lock_granularity_v2", "serial.colour"]
    assert all(e["log_level"] == "warning" for e in logs if e["event"] == "unknown JSON field ignored")


def test_the_warnings_are_bounded(monkeypatch, files, tmp_path):
    kernel, image = files
    monkeypatch.setattr(json_fields, "_WARNED_MAX", 3)
    body = {**kata_body(kernel, image, tmp_path), **{f"field{i}": i for i in range(10)}}
    with capture_logs() as logs:
        VmConfig.from_json(body)
    assert len([e for e in logs if e["event"] == "unknown JSON field ignored"]) == 3


@pytest.mark.parametrize("path, value, message", [
    (("iommu",), True, "VmConfig: iommu=true is not supported"),
    (("platform", "tdx"), True, "platform: tdx=true is not supported"),
    (("platform", "sev_snp"), True, "platform: sev_snp=true is not supported"),
    (("pvpanic",), True, "VmConfig: pvpanic=true is not supported"),
    (("landlock_enable",), True, "VmConfig: landlock_enable=true is not supported"),
    (("serial", "iommu"), True, "serial: iommu=true is not supported"),
    (("disks", 0, "vhost_user"), True, "vhost_user=true is not supported"),
    (("balloon",), {"size": 0, "deflate_on_oom": False, "free_page_reporting": True}, "balloon="),
])
def test_a_field_asking_for_what_plugvm_lacks_is_refused_naming_it(files, tmp_path, path, value, message):
    kernel, image = files
    body = kata_body(kernel, image, tmp_path)
    part = body
    for key in path[:-1]:
        part = part[key]
    part[path[-1]] = value
    with pytest.raises(ConfigError) as error:
        VmConfig.from_json(body)
    assert message in str(error.value)


def test_wrong_types_stay_errors(files, tmp_path):
    kernel, image = files
    body = kata_body(kernel, image, tmp_path)
    body["cpus"]["boot_vcpus"] = 1.0
    with pytest.raises(ConfigError, match="cpus: boot_vcpus=1.0 is not an integer"):
        VmConfig.from_json(body)


def spec_schemas():
    import yaml
    from importlib import resources
    text = (resources.files("plugvm.testing") / "data" / "cloud-hypervisor.yaml").read_text()
    return yaml.safe_load(text)["components"]["schemas"]


# Each part of ch's VmConfig, the minimal body plugvm needs, and where it goes in a VmConfig.
PARTS = {
    "CpusConfig": ("cpus", {"boot_vcpus": 1, "max_vcpus": 1}),
    "MemoryConfig": ("memory", {"size": 512 << 20}),
    "PayloadConfig": ("payload", None),                       # filled with the kernel below
    "ConsoleConfig": ("console", {"mode": "Off"}),
    "PlatformConfig": ("platform", {}),
    "DiskConfig": ("disks", {"path": "/dev/null"}),
    "NetConfig": ("net", {}),
    "RngConfig": ("rng", {}),
    "VsockConfig": ("vsock", None),
    "FsConfig": ("fs", None),
}


def spec_fields():
    schemas = spec_schemas()
    for schema in sorted(PARTS) + ["VmConfig"]:
        for name in schemas[schema]["properties"]:
            yield schema, name


@pytest.mark.parametrize("schema, name", list(spec_fields()))
def test_every_field_of_the_spec_is_read(schema, name, files, tmp_path):
    """Every property of ch's VmConfig and its parts is a field plugvm reads, not one it
    ignores: given a value of no JSON type it could have ([[1]]), it is refused naming
    it, so a value asking for something plugvm lacks is refused rather than dropped."""
    kernel, image = files
    body = {"payload": {"kernel": str(kernel)}, "memory": {"size": 512 << 20, "shared": True}}
    key, base = PARTS.get(schema, (None, None))
    if schema == "PayloadConfig":
        base = {"kernel": str(kernel)}
    elif schema == "VsockConfig":
        base = {"cid": 3, "socket": str(tmp_path / "v.sock")}
    elif schema == "FsConfig":
        base = {"tag": "t", "socket": str(tmp_path / "fs.sock")}
    part = {**(base or {}), name: [[1]]}
    if schema == "VmConfig":
        body[name] = [[1]]
    elif key in ("disks", "net", "fs"):
        body[key] = [part]
    else:
        body[key] = {**body.get(key, {}), **part}
    with capture_logs() as logs, pytest.raises(ConfigError) as refused:
        VmConfig.from_json(body)
    assert [e["field"] for e in logs if e["event"] == "unknown JSON field ignored"] == []
    assert name in str(refused.value) or "expected a JSON object" in str(refused.value), str(refused.value)
