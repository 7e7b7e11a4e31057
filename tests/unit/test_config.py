"""plugvm.config: cloud-hypervisor's command line and JSON VM config into frozen dataclasses."""

import dataclasses
import json
import mmap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugvm.config import (
    ApiSocketConfig, CliConfig, ConfigError, ConsoleConfig, ConsoleMode, CoreScheduling, CpuAffinity, CpusConfig,
    CpuTopology, MemoryConfig, PayloadConfig, VmConfig, parse_cli,
)
from plugvm.config.api_socket import parse_api_socket
from plugvm.config.console import (
    VirtioConsoleConfig, console_from_json, parse_console, parse_serial, serial_from_json)
from plugvm.config.errors import Where
from plugvm.config.json_fields import JsonObject
from plugvm.config.lists import int_list
from plugvm.config.options import Options, dequote, quote, split_items
from plugvm.config.sizes import show_size, to_size
from plugvm.errors import PlugvmError

M, G = 1 << 20, 1 << 30


@pytest.fixture
def kernel(tmp_path) -> Path:
    """The smallest file plugvm takes for an ELF vmlinux: the magic."""
    path = tmp_path / "vmlinux"
    path.write_bytes(b"\x7fELF" + bytes(60))
    return path


@pytest.fixture
def bzimage(tmp_path) -> Path:
    """A file with the bzImage setup header's magic "HdrS" at 0x202."""
    data = bytearray(0x400)
    data[0x202:0x206] = b"HdrS"
    path = tmp_path / "bzImage"
    path.write_bytes(bytes(data))
    return path


@pytest.fixture
def initramfs(tmp_path) -> Path:
    path = tmp_path / "initrd.img"
    path.write_bytes(b"070701")
    return path


def vm_of(kernel: Path, *args: str) -> VmConfig:
    vm = parse_cli(["--kernel", str(kernel), *args]).vm
    assert vm is not None
    return vm


def refused(argv: list[str], *fragments: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_cli(argv)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert "\n" not in message
    return message


def test_config_error_is_a_plugvm_error_and_a_value_error():
    assert issubclass(ConfigError, PlugvmError)
    assert issubclass(ConfigError, ValueError)


# --- good command lines ---------------------------------------------------------------

def test_defaults_are_cloud_hypervisors(kernel):
    cli = parse_cli(["--kernel", str(kernel)])
    assert cli == CliConfig(vm=cli.vm, api_socket=None, log_file=None, verbosity=0)
    vm = cli.vm
    assert vm.payload == PayloadConfig(kernel=kernel, initramfs=None, cmdline=None)
    assert vm.cpus == CpusConfig(boot_vcpus=1, max_vcpus=1, topology=None, kvm_hyperv=False, max_phys_bits=46,
                                 affinity=None, nested=True, core_scheduling=CoreScheduling.VM)
    assert vm.cpus.features.amx is False
    assert vm.memory == MemoryConfig(size=512 * M, mergeable=False, hotplug_method="acpi",
                                     hotplug_size=None, hotplugged_size=None, shared=False, hugepages=False,
                                     hugepage_size=None, prefault=False, reserve=False, thp=True)
    assert vm.serial == ConsoleConfig(mode=ConsoleMode.NULL)
    assert vm.console == VirtioConsoleConfig(mode=ConsoleMode.TTY, id=None, pci_device_id=None)
    # The rest of plugvm compares modes with plain strings.
    assert vm.serial.mode == "null" and vm.console.mode == "tty" and vm.memory.hotplug_method == "acpi"


def test_configs_are_frozen(kernel):
    vm = vm_of(kernel)
    with pytest.raises(dataclasses.FrozenInstanceError):
        vm.cpus.boot_vcpus = 4


def test_every_key_is_parsed_and_stored(bzimage, initramfs, tmp_path):
    vm = vm_of(bzimage, "--initramfs", str(initramfs), "--cmdline", "console=ttyS0 panic=-1",
               "--cpus", "boot=2,max=4,topology=1:2:1:2,kvm_hyperv=off,max_phys_bits=40,"
                         "affinity=[0@[0-3],1@[4,6]],features=[],nested=off,core_scheduling=vm",
               "--memory", "size=1G,mergeable=off,shared=on,hugepages=on,hugepage_size=2M,"
                           "hotplug_method=virtio-mem,hotplug_size=4G,hotplugged_size=512M,prefault=on,"
                           "reserve=on,thp=off",
               "--serial", f"file={tmp_path / 'serial.log'}", "--console", "off")
    assert vm.payload == PayloadConfig(bzimage, initramfs, "console=ttyS0 panic=-1")
    assert vm.cpus.boot_vcpus == 2 and vm.cpus.max_vcpus == 4
    assert vm.cpus.topology == CpuTopology(threads_per_core=1, cores_per_die=2, dies_per_package=1, packages=2)
    assert not vm.cpus.kvm_hyperv and vm.cpus.max_phys_bits == 40 and not vm.cpus.nested
    assert vm.cpus.affinity == (CpuAffinity(0, (0, 1, 2, 3)), CpuAffinity(1, (4, 6)))
    assert not vm.cpus.features.amx and vm.cpus.core_scheduling is CoreScheduling.VM
    assert vm.memory == MemoryConfig(size=1 * G, mergeable=False, hotplug_method="virtio-mem",
                                     hotplug_size=4 * G, hotplugged_size=512 * M, shared=True, hugepages=True,
                                     hugepage_size=2 * M, prefault=True, reserve=True, thp=False)
    assert vm.serial == ConsoleConfig(mode=ConsoleMode.FILE, file=tmp_path / "serial.log")


def test_max_defaults_to_boot(kernel):
    assert vm_of(kernel, "--cpus", "boot=3").cpus.max_vcpus == 3
    assert vm_of(kernel, "--cpus", "max=8").cpus == CpusConfig(boot_vcpus=1, max_vcpus=8)


@pytest.mark.parametrize("text, size", [("512M", 512 * M), ("1G", G), ("2048K", 2 * M), ("1073741824", G),
                                        (" 64M", 64 * M), ('"128M"', 128 * M)])
def test_sizes(kernel, text, size):
    assert vm_of(kernel, "--memory", f"size={text}").memory.size == size


@pytest.mark.parametrize("text, value", [("on", True), ("off", False), ("true", True), ("false", False),
                                         ("ON", True), ("False", False)])
def test_toggles(kernel, text, value):
    assert vm_of(kernel, "--cpus", f"nested={text}").cpus.nested is value


@pytest.mark.parametrize("value, key", [("kvm_hyperv=on", "kvm_hyperv"), ("features=[amx]", "features"),
                                        ("core_scheduling=vcpu", "core_scheduling"),
                                        ("core_scheduling=off", "core_scheduling")])
def test_cpu_options_plugvm_does_not_apply_are_refused_unless_default(kernel, value, key):
    refused(["--kernel", str(kernel), "--cpus", value], "--cpus", key, "not supported")


def test_an_empty_value_means_not_given_as_in_ch(kernel):
    assert vm_of(kernel, "--memory", "size=,thp=").memory == MemoryConfig()


def test_case_insensitive_choices_as_in_ch(kernel):
    memory = vm_of(kernel, "--memory", "hotplug_method=Virtio-Mem,hotplug_size=1G").memory
    assert memory.hotplug_method == "virtio-mem"


def test_acpi_hotplug(kernel):
    memory = vm_of(kernel, "--memory", "size=1G,hotplug_size=2G").memory
    assert memory.hotplug_method == "acpi" and memory.hotplug_size == 2 * G


@pytest.mark.parametrize("text, mode", [("off", ConsoleMode.OFF), ("null", ConsoleMode.NULL),
                                        ("tty", ConsoleMode.TTY)])
def test_serial_modes(kernel, text, mode):
    assert vm_of(kernel, "--serial", text, "--console", "off").serial == ConsoleConfig(mode=mode)


def test_serial_file_path_may_be_quoted_with_commas(kernel):
    serial = vm_of(kernel, "--serial", 'file="/tmp/a,b ""c"""').serial
    assert serial == ConsoleConfig(mode=ConsoleMode.FILE, file=Path('/tmp/a,b "c"'))


def test_a_bzimage_is_a_kernel(bzimage):
    assert vm_of(bzimage).payload.kernel == bzimage


def test_initramfs_and_cmdline(kernel, initramfs):
    payload = vm_of(kernel, "--initramfs", str(initramfs), "--cmdline=-single quiet").payload
    assert payload.initramfs == initramfs and payload.cmdline == "-single quiet"


@pytest.mark.parametrize("text, expected", [
    ("/run/plugvm.sock", ApiSocketConfig(path=Path("/run/plugvm.sock"))),
    ("path=/run/plugvm.sock", ApiSocketConfig(path=Path("/run/plugvm.sock"))),
    ("fd=3", ApiSocketConfig(fd=3)),
    ("/tmp/odd,name=x", ApiSocketConfig(path=Path("/tmp/odd,name=x"))),
])
def test_without_a_kernel_only_the_api_is_served(text, expected):
    assert parse_cli(["--api-socket", text]) == CliConfig(vm=None, api_socket=expected)


def test_api_socket_with_a_vm(kernel):
    cli = parse_cli(["--kernel", str(kernel), "--api-socket", "path=/tmp/api.sock"])
    assert cli.vm is not None and cli.api_socket == ApiSocketConfig(path=Path("/tmp/api.sock"))


def test_logging_options():
    assert parse_cli(["-vvv", "--log-file", "/tmp/plugvm.log"]) == CliConfig(
        vm=None, log_file=Path("/tmp/plugvm.log"), verbosity=3)
    assert parse_cli(["-v", "-v"]).verbosity == 2
    assert parse_cli([]) == CliConfig(vm=None)


def test_help_prints_and_exits_0(capsys):
    with pytest.raises(SystemExit) as info:
        parse_cli(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--cpus" in out and "hotplug_method=METHOD" in out and "methods: acpi" in out


def test_version(capsys):
    with pytest.raises(SystemExit) as info:
        parse_cli(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.startswith("plugvm ")


# --- refused command lines -------------------------------------------------------------
# Each case: the arguments after --kernel, then what the one-line message must contain.

BAD = [
    # unknown keys
    (["--cpus", "boot=2,foo=1"], "--cpus", "unknown key 'foo'"),
    (["--memory", "size=1G,bar=on"], "--memory", "unknown key 'bar'"),
    (["--memory", "file=/dev/shm/x"], "--memory", "unknown key 'file'"),
    (["--console", "off,foo"], "--console", "unknown key 'foo'"),
    # bad values
    (["--cpus", "boot=two"], "--cpus", "boot='two'", "not an integer"),
    (["--cpus", "boot=-1"], "--cpus", "boot='-1'", "not an integer"),
    (["--cpus", "boot=1.5"], "--cpus", "boot='1.5'"),
    (["--cpus", "max=4294967296"], "--cpus", "max='4294967296'", "out of range"),
    (["--cpus", "max_phys_bits=256"], "--cpus", "max_phys_bits='256'", "out of range"),
    (["--cpus", "nested=maybe"], "--cpus", "nested='maybe'", "on/off"),
    (["--cpus", "kvm_hyperv=1"], "--cpus", "kvm_hyperv='1'"),
    (["--cpus", "core_scheduling=sometimes"], "--cpus", "core_scheduling='sometimes'"),
    (["--cpus", "topology=1:2:1"], "--cpus", "topology='1:2:1'"),
    (["--cpus", "topology=a:b:c:d"], "--cpus", "topology='a:b:c:d'"),
    (["--cpus", "affinity=0@[1]"], "--cpus", "affinity='0@[1]'"),
    (["--cpus", "affinity=[0@[3-1]]"], "--cpus", "affinity=", "reversed"),
    (["--cpus", "features=[avx512]"], "--cpus", "unknown feature 'avx512'"),
    (["--memory", "size=12X"], "--memory", "size='12X'", "not a size"),
    (["--memory", "size=1T"], "--memory", "size='1T'"),
    (["--memory", "size=1g"], "--memory", "size='1g'"),
    (["--memory", "size=512MB"], "--memory", "size='512MB'"),
    (["--memory", "size=-1M"], "--memory", "size='-1M'"),
    (["--memory", "hotplug_size=lots"], "--memory", "hotplug_size='lots'"),
    (["--memory", "size=17179869184G"], "--memory", "size='17179869184G'", "too large"),
    (["--memory", "shared=yes"], "--memory", "shared='yes'", "on/off"),
    (["--memory", "hotplug_method=dimm"], "--memory", "hotplug_method='dimm' is not available",
     "no installed plugin provides it"),
    (["--memory", "hotplug_method=dimm!"], "--memory", "hotplug_method='dimm!'", "not a method name"),
    (["--serial", "foo"], "--serial", "unknown key 'foo'"),
    (["--serial", "file"], "--serial", "file needs a value"),
    (["--serial", "file="], "--serial", "file mode needs a path"),
    (["--serial", "tty=yes"], "--serial", "tty takes no value"),
    (["--serial", "tty,file=/tmp/x"], "--serial", "tty and file"),
    (["--serial", ""], "--serial", "got nothing"),
    # syntax
    (["--cpus", "affinity=[0@[1]"], "--cpus", "unclosed '['"),
    (["--cpus", "boot=1]"], "--cpus", "unbalanced ']'"),
    (["--serial", 'file="/tmp/x'], "--serial", "unclosed '\"'"),
    (["--cpus", "boot=1,boot=2"], "--cpus", "boot is given twice"),
    # contradictions
    (["--cpus", "boot=4,max=2"], "--cpus", "max=2 is lower than boot=4"),
    (["--cpus", "boot=0"], "--cpus", "boot=0"),
    (["--cpus", "boot=0,max=0"], "--cpus", "boot=0"),
    (["--cpus", "max=8193"], "--cpus", "max=8193", "8192"),
    (["--cpus", "boot=2,topology=1:1:1:1"], "--cpus", "topology='1:1:1:1'", "max=2"),
    (["--cpus", "max=4,topology=1:2:1:1"], "--cpus", "topology='1:2:1:1'", "max=4"),
    (["--cpus", "max=0,topology=0:1:1:1"], "--cpus"),
    (["--cpus", "boot=2,topology=2:0:1:1"], "--cpus", "topology='2:0:1:1'", "zero"),
    (["--cpus", "boot=4,topology=4:1:1:1"], "--cpus", "topology='4:1:1:1'", "threads per core"),
    (["--cpus", "boot=2,affinity=[2@[0]]"], "--cpus", "affinity for vCPU 2"),
    (["--cpus", "boot=2,affinity=[0@[0],0@[1]]"], "--cpus", "vCPU 0 is given twice"),
    (["--memory", "size=0"], "--memory", "size=0"),
    (["--memory", "size=1000"], "--memory", "size=1000", "page size"),
    (["--memory", "size=4097K"], "--memory", "size=4097K", "page size"),
    (["--memory", "hotplug_size=0"], "--memory", "hotplug_size=0"),
    (["--memory", "hotplug_method=virtio-mem,hotplug_size=0"], "--memory", "hotplug_size=0"),
    (["--memory", "hotplug_size=2G,hotplugged_size=1G"], "--memory", "hotplugged_size", "virtio-mem"),
    (["--memory", "hotplug_method=acpi,hotplug_size=2G,hotplugged_size=1G"], "--memory", "hotplugged_size", "acpi"),
    (["--memory", "hotplug_method=virtio-mem,hotplugged_size=1G"], "--memory", "hotplugged_size needs hotplug_size"),
    (["--memory", "hotplug_method=virtio-mem,hotplug_size=1G,hotplugged_size=2G"], "--memory",
     "hotplugged_size=2G is larger than hotplug_size=1G"),
    (["--memory", "hotplug_method=virtio-mem,hotplug_size=1G,hotplugged_size=1M"], "--memory",
     "hotplugged_size=1M", "2M"),
    (["--memory", "hotplug_method=virtio-mem,hotplug_size=100M"], "--memory", "hotplug_size=100M", "128M"),
    (["--memory", "hugepage_size=2M"], "--memory", "hugepage_size needs hugepages=on"),
    (["--memory", "hugepages=on,hugepage_size=3M"], "--memory", "hugepage_size=3M", "power of two"),
    (["--memory", "size=3M,hugepages=on,hugepage_size=2M"], "--memory", "size=3M", "hugepage_size=2M"),
    (["--memory", "shared=on,mergeable=on"], "--memory", "shared", "mergeable"),
    # not available
    (["--console", "pty"], "--console", "pty is not available in plugvm", "off, null, tty, file"),
    (["--console", "socket=/tmp/console.sock"], "--console", "socket is not available in plugvm"),
    (["--console", "tty,iommu=on"], "--console", "iommu=on is not supported"),
    (["--console", "null,pci_segment=1"], "--console", "pci_segment=1", "segment 0"),
    (["--console", "null,pci_device_id=0"], "--console", "pci_device_id=0", "host bridge"),
    (["--console", "null,pci_device_id=32"], "--console", "pci_device_id=32"),
    (["--console", "null,id=__console"], "--console", "id='__console'", "reserved"),
    (["--console", "file"], "--console", "file needs a value"),
    (["--console", "tty,null"], "--console", "tty and null"),
    (["--serial", "pty"], "--serial", "pty is not available in plugvm"),
    (["--serial", "socket=/tmp/serial.sock"], "--serial", "socket is not available in plugvm"),
    (["--serial", "tty,id=s"], "--serial", "unknown key 'id'"),
    # the option layer
    (["--cpus"], "--cpus", "expected one argument"),
    (["--cpus", "boot=1", "--cpus", "boot=2"], "--cpus", "more than once"),
    (["--memory", "size=1G", "--memory", "size=2G"], "--memory", "more than once"),
    (["--serial", "tty", "--serial", "null"], "--serial", "more than once"),
    (["--cmdline", "a", "--cmdline", "b"], "--cmdline", "more than once"),
    (["--bogus"], "--bogus"),
    (["--cpu", "boot=1"], "--cpu"),
    (["stray"], "stray"),
    (["--initramfs", "/nonexistent/initrd"], "--initramfs", "'/nonexistent/initrd' does not exist"),
    (["--initramfs", ""], "--initramfs", "empty"),
    (["--api-socket", "fd=three"], "--api-socket", "fd='three'"),
    (["--api-socket", "fd=3,path=/tmp/a"], "--api-socket", "not both"),
    (["--api-socket", "path="], "--api-socket", "path= needs a value"),
    (["--api-socket", "path=/a,mode=1"], "--api-socket", "unknown key 'mode'"),
    (["--api-socket", ""], "--api-socket", "empty"),
    (["--log-file", ""], "--log-file", "empty"),
]


@pytest.mark.parametrize("args, fragments", [(case[0], case[1:]) for case in BAD],
                         ids=[" ".join(case[0]) for case in BAD])
def test_bad_input_is_refused_naming_the_option(kernel, args, fragments):
    message = refused(["--kernel", str(kernel), *args], *fragments)
    assert message.startswith(fragments[0]) or fragments[0] in message.split(":")[0]


def test_an_unknown_key_names_the_option_and_key_first(kernel):
    message = refused(["--kernel", str(kernel), "--cpus", "boot=2,foo=1"])
    assert message.startswith("--cpus: unknown key 'foo'")


@pytest.mark.parametrize("option, value", [("--cpus", "boot=2"), ("--memory", "size=1G"), ("--serial", "tty"),
                                           ("--console", "off"), ("--cmdline", "quiet"),
                                           ("--initramfs", "/boot/initrd")])
def test_vm_options_need_a_kernel(option, value):
    refused([option, value], "--kernel", option)


def test_the_kernel_is_given_once(kernel):
    refused(["--kernel", str(kernel), "--kernel", str(kernel)], "--kernel", "more than once")


def test_a_missing_kernel_file(tmp_path):
    refused(["--kernel", str(tmp_path / "nope")], "--kernel", "does not exist", "nope")


def test_a_kernel_that_is_neither_bzimage_nor_elf(tmp_path):
    path = tmp_path / "README"
    path.write_bytes(b"not a kernel" * 100)
    refused(["--kernel", str(path)], "--kernel", "README", "neither a bzImage", "nor an ELF")


def test_a_file_too_short_for_the_bzimage_magic(tmp_path):
    path = tmp_path / "tiny"
    path.write_bytes(b"HdrS")
    refused(["--kernel", str(path)], "--kernel", "neither a bzImage")


def test_a_directory_is_not_a_kernel(tmp_path):
    refused(["--kernel", str(tmp_path)], "--kernel", "not a regular file")


def test_the_kernel_is_checked_after_the_options(tmp_path):
    # Like ch: a bad option is reported even when the kernel is bad too.
    refused(["--kernel", str(tmp_path / "nope"), "--cpus", "boot=x"], "--cpus")


# --- JSON -------------------------------------------------------------------------------

def test_json_round_trip_of_the_defaults(kernel):
    vm = vm_of(kernel)
    body = vm.to_json()
    assert body == {
        "cpus": {"boot_vcpus": 1, "max_vcpus": 1, "kvm_hyperv": False, "max_phys_bits": 46,
                 "features": {"amx": False}, "nested": True, "core_scheduling": "Vm"},
        "memory": {"size": 512 * M, "mergeable": False, "hotplug_method": "Acpi", "shared": False,
                   "hugepages": False, "prefault": False, "reserve": False, "thp": True},
        "payload": {"kernel": str(kernel)},
        "serial": {"mode": "Null"},
        "console": {"mode": "Tty", "iommu": False, "pci_segment": 0},
    }
    assert VmConfig.from_json(body) == vm


def test_json_round_trip_of_every_field(bzimage, initramfs, tmp_path):
    vm = vm_of(bzimage, "--initramfs", str(initramfs), "--cmdline", "console=ttyS0",
               "--cpus", "boot=2,max=4,topology=2:1:1:2,kvm_hyperv=off,max_phys_bits=39,affinity=[1@[2-3]],"
                         "features=[],nested=off,core_scheduling=vm",
               "--memory", "size=2G,hotplug_method=virtio-mem,hotplug_size=1G,hotplugged_size=256M,hugepages=on,"
                           "hugepage_size=2M,prefault=on,thp=off",
               "--serial", f"file={tmp_path / 'com1'}")
    body = vm.to_json()
    assert body["memory"]["hotplug_method"] == "VirtioMem" and body["serial"] == {"mode": "File",
                                                                                  "file": str(tmp_path / "com1")}
    assert body["cpus"]["affinity"] == [{"vcpu": 1, "host_cpus": [2, 3]}]
    assert VmConfig.from_json(body) == vm


def test_json_defaults_for_parts_left_out(kernel):
    vm = VmConfig.from_json({"payload": {"kernel": str(kernel)}})
    assert vm == vm_of(kernel)
    cpus = VmConfig.from_json({"payload": {"kernel": str(kernel)}, "cpus": {"boot_vcpus": 2, "max_vcpus": 2}}).cpus
    assert cpus == CpusConfig(boot_vcpus=2, max_vcpus=2)


def test_json_accepts_the_console_ch_would_send(kernel):
    body = {"payload": {"kernel": str(kernel)},
            "console": {"mode": "Off", "iommu": False, "pci_segment": 0}}
    assert VmConfig.from_json(body).console == VirtioConsoleConfig(mode=ConsoleMode.OFF)
    # ch's own default VM config: serial Null, console Tty, with serde's nulls.
    body["console"] = {"file": None, "mode": "Tty", "iommu": False, "socket": None, "pci_segment": 0}
    assert VmConfig.from_json(body).console == VirtioConsoleConfig(mode=ConsoleMode.TTY)


@pytest.mark.parametrize("text, console", [
    ("off", VirtioConsoleConfig(mode=ConsoleMode.OFF)),
    ("null", VirtioConsoleConfig(mode=ConsoleMode.NULL)),
    ("tty", VirtioConsoleConfig(mode=ConsoleMode.TTY)),
    ('file="/tmp/a,b"', VirtioConsoleConfig(mode=ConsoleMode.FILE, file=Path("/tmp/a,b"))),
    ("null,id=con0,pci_device_id=9,iommu=off,pci_segment=0",
     VirtioConsoleConfig(mode=ConsoleMode.NULL, id="con0", pci_device_id=9)),
])
def test_console_modes_and_pci_keys_round_trip_through_json(kernel, text, console):
    vm = vm_of(kernel, "--console", text)
    assert vm.console == console
    body = vm.to_json()
    assert body["console"]["mode"] == console.mode.json_name and body["console"]["pci_segment"] == 0
    assert VmConfig.from_json(json.loads(json.dumps(body))) == vm


def test_serial_tty_with_the_console_off_or_elsewhere(kernel, tmp_path):
    assert vm_of(kernel, "--serial", "tty", "--console", "off").serial.mode == "tty"
    vm = vm_of(kernel, "--serial", "tty", "--console", f"file={tmp_path / 'hvc0'}")
    assert vm.console.file == tmp_path / "hvc0"
    assert vm_of(kernel, "--serial", "null", "--console", "tty").console.mode == "tty"


def test_double_tty_is_accepted_as_current_cloud_hypervisor_does(kernel):
    # ch ≤ v36 refused it (DoubleTtyMode); since v37 it warns. The serial port gets the input.
    assert VmConfig.from_json(_body(kernel, serial={"mode": "Tty"})).console.mode == "tty"
    vm = vm_of(kernel, "--serial", "tty")
    assert (vm.serial.mode, vm.console.mode) == ("tty", "tty")
    assert VmConfig.from_json(_body(kernel, serial={"mode": "Tty"}, console={"mode": "Off"})).serial.mode == "tty"


def _body(kernel, **parts):
    return {"payload": {"kernel": str(kernel)}, **parts}


BAD_JSON = [
    ({"iommu": True}, "VmConfig", "iommu=true is not supported", "no virtual IOMMU"),
    ({"watchdog": True}, "VmConfig", "watchdog=true is not supported"),
    ({"balloon": {"size": 0}}, "VmConfig", "balloon=", "virtio-balloon"),
    ({"devices": [{"path": "/sys/bus/pci/devices/0000:01:00.0"}]}, "VmConfig", "devices=", "VFIO"),
    ({"platform": {"tdx": True}}, "platform", "tdx=true is not supported"),
    ({"platform": {"num_pci_segments": 0}}, "platform", "num_pci_segments=0"),
    ({"platform": {"uuid": "x"}}, "platform", "uuid='x' is not supported", "SMBIOS"),
    ({"platform": {"num_pci_segments": "2"}}, "platform", "num_pci_segments='2'", "not an integer"),
    ({"cpus": {"boot_vcpus": 1}}, "cpus", "missing field 'max_vcpus'"),
    ({"cpus": {"boot_vcpus": "2", "max_vcpus": 2}}, "cpus", "boot_vcpus='2'", "not an integer"),
    ({"cpus": {"boot_vcpus": True, "max_vcpus": 2}}, "cpus", "boot_vcpus=true", "not an integer"),
    ({"cpus": {"boot_vcpus": 2, "max_vcpus": 1}}, "cpus", "max_vcpus=1 is lower than boot_vcpus=2"),
    ({"cpus": {"boot_vcpus": 0, "max_vcpus": 1}}, "cpus", "boot_vcpus=0"),
    ({"cpus": {"boot_vcpus": 1, "max_vcpus": 9000}}, "cpus", "max_vcpus=9000"),
    ({"cpus": {"boot_vcpus": 1, "max_vcpus": 1, "kvm_hyperv": None}}, "cpus", "kvm_hyperv=null"),
    ({"cpus": {"boot_vcpus": 2, "max_vcpus": 2, "topology": {"threads_per_core": 1, "cores_per_die": 1,
                                                              "dies_per_package": 1, "packages": 1}}},
     "cpus", "topology", "max_vcpus=2"),
    ({"cpus": {"boot_vcpus": 1, "max_vcpus": 1, "topology": {"threads_per_core": 1}}},
     "cpus.topology", "missing field 'cores_per_die'"),
    ({"cpus": {"boot_vcpus": 1, "max_vcpus": 1, "core_scheduling": "vm"}}, "cpus", "core_scheduling='vm'"),
    ({"cpus": {"boot_vcpus": 1, "max_vcpus": 1, "affinity": [{"vcpu": 0, "host_cpus": ["a"]}]}},
     "cpus.affinity", "host_cpus"),
    ({"memory": {}}, "memory", "missing field 'size'"),
    ({"memory": {"size": "512M"}}, "memory", "size='512M'", "not an integer"),
    ({"memory": {"size": 512 * M, "hotplug_method": "virtio-mem"}}, "memory", "hotplug_method='virtio-mem'",
     "Acpi, VirtioMem"),
    ({"memory": {"size": 512 * M, "hotplug_size": 0}}, "memory", "hotplug_size=0"),
    ({"memory": {"size": 512 * M, "hotplug_size": G, "hotplugged_size": G}}, "memory", "hotplugged_size"),
    ({"memory": {"size": 512 * M, "zones": [{"id": "z0", "size": M}]}}, "memory", "zones=", "memory zones"),
    ({"memory": {"size": 1000}}, "memory", "size=1000", "page size"),
    ({"serial": {"mode": "tty"}}, "serial", "mode='tty'", "Tty"),
    ({"serial": {"mode": "File"}}, "serial", "file mode needs a path"),
    ({"serial": {"mode": "Tty", "file": "/tmp/x"}}, "serial", "file is given but the mode is tty"),
    ({"serial": {"mode": "Null", "iommu": True}}, "serial", "iommu=true is not supported"),
    ({"console": {"mode": "Pty"}}, "console", "Pty is not available in plugvm", "Off, Null, Tty, File"),
    ({"console": {"mode": "Socket", "socket": "/tmp/s"}}, "console", "Socket is not available"),
    ({"console": {"mode": "File"}}, "console", "file mode needs a path"),
    ({"console": {"mode": "Off", "iommu": True}}, "console", "iommu=on is not supported"),
    ({"console": {"mode": "Tty", "pci_segment": 2}}, "console", "pci_segment=2"),
    ({"console": {"mode": "Tty", "id": "__console"}}, "console", "id='__console'"),
    ({"console": None}, "VmConfig", "console=null"),
]


@pytest.mark.parametrize("parts, fragments", [(case[0], case[1:]) for case in BAD_JSON],
                         ids=[str(case[0])[:60] for case in BAD_JSON])
def test_bad_json_is_refused_naming_the_field(kernel, parts, fragments):
    with pytest.raises(ConfigError) as info:
        VmConfig.from_json(_body(kernel, **parts))
    message = str(info.value)
    assert message.startswith(fragments[0] + ":"), message
    for fragment in fragments[1:]:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_json_needs_a_payload_with_an_existing_kernel(tmp_path):
    with pytest.raises(ConfigError, match="missing field 'payload'"):
        VmConfig.from_json({})
    with pytest.raises(ConfigError, match="payload: missing field 'kernel'"):
        VmConfig.from_json({"payload": {"initramfs": "/x"}})
    with pytest.raises(ConfigError, match="payload: kernel=.*does not exist"):
        VmConfig.from_json({"payload": {"kernel": str(tmp_path / "nope")}})
    with pytest.raises(ConfigError, match="payload: firmware='/x' is not supported"):
        VmConfig.from_json({"payload": {"kernel": str(tmp_path), "firmware": "/x"}})
    with pytest.raises(ConfigError, match="VmConfig: expected a JSON object"):
        VmConfig.from_json([])


# --- the key=value parser, property-based ------------------------------------------------

KEYS = ("a", "b", "size", "topology", "file", "x_y")
# A plain value: no quotes, brackets or commas, and no surrounding spaces (ch trims values).
plain = st.text(st.characters(blacklist_characters=',"[]', blacklist_categories=("Cs",)), max_size=12) \
    .filter(lambda s: s == s.strip())
bracketed = st.recursive(plain.map(lambda s: s.replace("=", "")),
                         lambda inner: st.lists(inner, max_size=3).map(lambda items: "[" + ",".join(items) + "]"),
                         max_leaves=6).filter(lambda s: s.startswith("["))
quoted = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


@st.composite
def option_strings(draw):
    """(the option string, {key: what Options.text() must return for it})."""
    keys = draw(st.lists(st.sampled_from(KEYS), unique=True, max_size=len(KEYS)))
    expected, items = {}, []
    for key in keys:
        kind = draw(st.sampled_from(["plain", "bracketed", "quoted"]))
        if kind == "quoted":
            value = draw(quoted)
            items.append(f"{key}={quote(value)}")
        else:
            value = draw(plain if kind == "plain" else bracketed)
            items.append(f"{key}={value}")
        expected[key] = value if value or kind == "quoted" else None   # key= alone means not given
    return ",".join(items), expected


@given(option_strings())
def test_option_strings_parse_back_to_their_values(case):
    text, expected = case
    options = Options(text, Where("--x"), KEYS)
    assert {key: options.text(key) for key in KEYS if options.given(key)} == expected


@given(st.text(max_size=40))
def test_any_option_string_parses_or_raises_config_error(text):
    try:
        Options(text, Where("--x"), KEYS, flags=("tty", "off"))
    except ConfigError as e:
        assert str(e).startswith("--x: ")


@given(st.lists(st.text(st.characters(blacklist_characters=',"[]', blacklist_categories=("Cs",)), min_size=1)
                .filter(lambda s: s == s.strip()), min_size=1, max_size=5))
def test_items_split_at_commas_outside_brackets_and_quotes(values):
    text = ",".join(f"k{i}=[{v},{v}]" if i % 2 else f"k{i}={quote(v + ',' + v)}" for i, v in enumerate(values))
    items = split_items(text)
    assert len(items) == len(values)
    for i, (item, v) in enumerate(zip(items, values)):
        assert dequote(item.partition("=")[2]) == (f"[{v},{v}]" if i % 2 else f"{v},{v}")


@given(st.text())
def test_quote_and_dequote_are_inverse(value):
    assert dequote(quote(value)) == value


@given(st.integers(0, 2**34), st.sampled_from([("", 1), ("K", 1 << 10), ("M", M), ("G", G)]))
def test_sizes_parse(number, unit):
    suffix, scale = unit
    assert to_size(f"{number}{suffix}") == number * scale
    assert to_size(show_size(number * scale)) == number * scale


@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=20))
def test_integer_lists(numbers):
    assert int_list("[" + ",".join(map(str, numbers)) + "]") == tuple(numbers)


@given(st.integers(1, 64), st.integers(0, 64))
def test_cpus_json_round_trip(boot, extra):
    cpus = CpusConfig.parse(f"boot={boot},max={boot + extra}")
    assert CpusConfig.from_json(JsonObject(cpus.to_json(), Where("cpus", json=True))) == cpus


def test_the_page_size_rule_uses_the_hosts_page_size(kernel):
    assert vm_of(kernel, "--memory", f"size={mmap.PAGESIZE * 3}").memory.size == mmap.PAGESIZE * 3


# Text built from the syntax's own characters and keys, to reach deep into each parser.
option_text = st.lists(st.sampled_from(["boot", "max", "topology", "affinity", "features", "size", "hotplug_size",
                                        "hotplug_method", "hotplugged_size", "tty", "file", "off", "path", "fd",
                                        "=", ",", "[", "]", '"', "@", ":", "-", "0", "1", "2", "4", "M", "G", "on",
                                        "virtio-mem", "amx", " ", "x"]), max_size=16).map("".join)


@pytest.mark.parametrize("parse", [CpusConfig.parse, MemoryConfig.parse, parse_serial, parse_console,
                                   parse_api_socket])
@given(text=st.one_of(option_text, st.text(max_size=30)))
def test_option_values_parse_or_raise_config_error(parse, text):
    try:
        parse(text)
    except ConfigError:
        pass


json_values = st.recursive(st.none() | st.booleans() | st.integers(-2, 2**65) | st.sampled_from(
    ["", "Off", "Tty", "File", "Acpi", "VirtioMem", "Vm", "/tmp/x"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(
        ["vcpu", "host_cpus", "amx", "threads_per_core", "cores_per_die", "dies_per_package", "packages"]),
        inner, max_size=4), max_leaves=8)
SECTIONS = {
    "cpus": (CpusConfig.from_json, ["boot_vcpus", "max_vcpus", "topology", "affinity", "features", "nested",
                                    "max_phys_bits", "core_scheduling", "junk"]),
    "memory": (MemoryConfig.from_json, ["size", "hotplug_size", "hotplugged_size", "hotplug_method", "shared",
                                        "hugepage_size", "hugepages", "thp", "junk"]),
    "serial": (serial_from_json, ["mode", "file", "socket", "junk"]),
    "console": (console_from_json, ["mode", "file", "iommu", "pci_segment", "id", "pci_device_id", "junk"]),
}


@pytest.mark.parametrize("section", SECTIONS)
@given(data=st.data())
def test_json_sections_parse_or_raise_config_error(section, data):
    read, fields = SECTIONS[section]
    body = data.draw(st.dictionaries(st.sampled_from(fields), json_values, max_size=5))
    try:
        read(JsonObject(body, Where(section, json=True)))
    except ConfigError as e:
        assert str(e).startswith(section)


def test_a_kernel_path_the_host_cannot_take_is_one_line(tmp_path):
    for path, why in (("/" + "x" * 5000, "cannot be used: File name too long"),
                      (str(tmp_path / "a\0b"), "cannot be used: embedded null byte"),
                      (str(tmp_path / "file" / "under"), "cannot be used: Not a directory")):
        (tmp_path / "file").write_text("")
        with pytest.raises(ConfigError, match=why) as info:
            parse_cli(["--kernel", path])
        assert "\n" not in str(info.value) and len(str(info.value)) < 400


def test_the_hotplug_guides_command_lines_parse_as_written(kernel, tmp_path):
    # ../shared/reference/hotplug-guide.zh.md: cloud-hypervisor's docs/hotplug.md, option for option.
    disk = tmp_path / "focal-server-cloudimg-amd64.raw"
    disk.write_bytes(bytes(512))
    common = ["--kernel", str(kernel), "--cmdline", "console=ttyS0 console=hvc0 root=/dev/vda1 rw",
              "--disk", f"path={disk}"]
    tail = ["--net", "tap=,mac=,ip=,mask=", "--rng", "--api-socket=/tmp/ch-socket"]
    for memory in ("size=1024M", "size=1024M,hotplug_size=8192M"):
        cli = parse_cli([*common, "--cpus", "boot=4,max=8", "--memory", memory, *tail])
        assert cli.api_socket.path == Path("/tmp/ch-socket")
        assert (cli.vm.cpus.boot_vcpus, cli.vm.cpus.max_vcpus, cli.vm.memory.size) == (4, 8, 1024 * M)
        net, = cli.vm.devices["net"]
        assert net.tap is None and net.ip is None and net.mac      # a vmtapN, a random MAC, as ch
        assert cli.vm.devices["rng"].src == Path("/dev/urandom")  # a bare --rng: the defaults
    assert parse_cli([*common, "--rng", "src=/dev/random"]).vm.devices["rng"].src == Path("/dev/random")


@pytest.mark.parametrize("bits", [0, 31, 53, 255])
def test_max_phys_bits_outside_32_to_52_is_refused(kernel, bits):
    refused(["--kernel", str(kernel), "--cpus", f"max_phys_bits={bits}"], "--cpus", "max_phys_bits", "32 to 52")
