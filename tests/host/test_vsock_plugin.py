"""plugvm-vsock through the installed registry (plugvm.plugins.load()) on this host's
KVM, without a Linux guest: a Machine with --vsock binds the socket, removal (the
guest's eject played by the test) unlinks it, a reboot hands it over, an existing path
is refused with nothing attached; then the API: one vsock per VM, as cloud-hypervisor."""

import gc
import os
import socket
import stat
import threading

import pytest

from plugvm import plugins
from plugvm.config.payload import PayloadConfig
from plugvm.config.vm import VmConfig
from plugvm.errors import PlugvmError
from plugvm.kvm import Kvm
from plugvm.machine import Machine
from plugvm.serial_port import ConsoleBackend, Consoles
from plugvm.testing.tiny_kernel import bzimage

from plugvm_vsock import Listener, VsockError

from test_api import Plugvm, errors, vm_body, wait_serial
from test_hotplug import eject

REGISTRY = plugins.load()
VSOCK = REGISTRY.types["vsock"]


@pytest.fixture
def kvm():
    k = Kvm()
    yield k
    k.close()


@pytest.fixture
def boot(tmp_path, kvm):
    """boot(devices, handover=None): a Machine of the tiny kernel; all closed at the end."""
    kernel = tmp_path / "spin.bzImage"
    kernel.write_bytes(bzimage(b"", poweroff=False))
    made = []

    def make(devices, handover=None):
        backend = Consoles(serial=ConsoleBackend("null"))
        m = Machine(kvm, VmConfig(payload=PayloadConfig(kernel=kernel), devices=devices), backend,
                    kvm.supported_cpuid(), REGISTRY, handover=handover)
        made.append((m, backend))
        return m

    yield make
    for m, backend in made:
        m.close()
        backend.close()


def is_socket(path) -> bool:
    return os.path.lexists(path) and stat.S_ISSOCK(os.lstat(path).st_mode)


def fds():
    gc.collect()        # an earlier test's garbage closing its fds mid-test is not ours
    return len(os.listdir("/proc/self/fd"))


def test_the_installed_plugin_provides_vsock():
    assert VSOCK.distribution == "plugvm-vsock" and VSOCK.cli_option == "--vsock" and not VSOCK.multiple


def test_a_cold_vsock_binds_its_socket_and_removal_unlinks_it(boot, tmp_path):
    path = tmp_path / "vsock.sock"
    m = boot({"vsock": VSOCK.parse(f"cid=3,socket={path},id=v0")})
    attached = m.devices.devices["v0"]
    assert is_socket(path) and attached.transport.device.config_bytes() == (3).to_bytes(8, "little")
    with socket.socket(socket.AF_UNIX) as host:
        host.connect(str(path))                  # the VMM listens (the guest's driver is not up yet)
    m.request_removal("v0")
    eject(m, 1 << attached.slot)
    assert attached.gone.is_set() and not os.path.lexists(path)


def test_a_hot_added_vsock_is_removed_with_nothing_left(boot, tmp_path):
    m = boot({})
    before_fds, before_threads = fds(), sorted(t.name for t in threading.enumerate())
    path = tmp_path / "hot.sock"
    info = m.add_device(VSOCK, VSOCK.from_json({"cid": 3, "socket": str(path), "id": "test0"}))
    assert info.id == "test0" and is_socket(path)
    slot = m.devices.devices["test0"].slot
    m.request_removal("test0")
    eject(m, 1 << slot)
    assert not os.path.lexists(path) and "test0" not in m.devices.devices
    assert fds() == before_fds and sorted(t.name for t in threading.enumerate()) == before_threads


def test_an_existing_path_is_refused_and_nothing_is_attached(boot, tmp_path):
    m = boot({})
    path = tmp_path / "taken.sock"
    config = VSOCK.parse(f"cid=3,socket={path}")      # free when parsed, taken by the time it binds
    path.write_text("someone else's")
    before = dict(m.devices.devices)
    before_fds = fds()
    with pytest.raises(VsockError, match=f"socket='{path}' already exists") as e:
        m.add_device(VSOCK, config)
    assert isinstance(e.value, PlugvmError)
    assert m.devices.devices == before and fds() == before_fds
    assert path.read_text() == "someone else's"         # not removed: it was never ours


def test_a_reboot_hands_the_bound_socket_to_the_next_boot(boot, tmp_path):
    path = tmp_path / "vsock.sock"
    config = VSOCK.parse(f"cid=3,socket={path},id=v0")
    first = boot({"vsock": config})
    inode = os.lstat(path).st_ino
    with socket.socket(socket.AF_UNIX) as early:
        early.connect(str(path))
        handover = {}
        first.close(handover)
        assert isinstance(handover["v0"], Listener) and is_socket(path) and os.lstat(path).st_ino == inode
        second = boot({"vsock": config}, handover=handover)
        assert handover == {}                              # taken by the new device
        device = second.devices.devices["v0"].transport.device
        assert device.listener.sock.accept()[0] is not None  # the connection made across the reboot waits
    second.close()
    assert not os.path.lexists(path)


# --- the API: cloud-hypervisor's rules -------------------------------------------------------------

@pytest.fixture
def kernel(tmp_path):
    path = tmp_path / "spin.bzImage"
    path.write_bytes(bzimage(b"tiny guest up\n", poweroff=False))
    return path


def test_the_api_allows_one_vsock_and_the_socket_survives_a_reboot(tmp_path, kernel):
    path = tmp_path / "api-vsock.sock"
    p = Plugvm(tmp_path)
    try:
        assert p.put("vm.create", vm_body(kernel, tmp_path)).status_code == 204
        assert p.put("vm.boot").status_code == 204
        wait_serial(tmp_path, 1)
        added = p.put("vm.add-vsock", {"cid": 3, "socket": str(path), "id": "test0"})
        assert added.status_code == 200 and added.json()["id"] == "test0"
        assert is_socket(path)
        second = p.put("vm.add-vsock", {"cid": 4, "socket": str(tmp_path / "other.sock")})
        assert second.status_code >= 400 and "its one vsock device" in " ".join(errors(second))
        assert not os.path.lexists(tmp_path / "other.sock")
        inode = os.lstat(path).st_ino
        assert p.put("vm.reboot").status_code == 204
        wait_serial(tmp_path, 2)
        assert is_socket(path) and os.lstat(path).st_ino == inode
        assert p.get("vm.info").json()["config"]["vsock"] == {"cid": 3, "socket": str(path), "id": "test0",
                                                              "iommu": False, "pci_segment": 0,
                                                              "pci_device_id": 3}
        taken = tmp_path / "taken.sock"
        taken.write_text("")
        assert p.put("vm.shutdown").status_code == 204
        assert not os.path.lexists(path)
        refused = p.put("vm.add-vsock", {"cid": 3, "socket": str(taken)})
        assert refused.status_code >= 400 and "already exists" in " ".join(errors(refused))
    finally:
        p.close()
