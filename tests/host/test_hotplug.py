"""PCI hotplug on this host's KVM, without a Linux guest: the test plays the guest's
ACPI (it reads PCIU/PCID and writes B0EJ on the MMIO bus, as PCNT and _EJ0 do), so it
can also be the hostile guest; then the API's answers on a running tiny guest, which
never ejects, so removals stay pending."""

import gc
import json
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from plugvm.builtin.rng import plugvm_device_types as rng_types
from plugvm.config.json_fields import JsonObject
from plugvm.config.errors import Where
from plugvm.config.options import Options
from plugvm.config.payload import PayloadConfig
from plugvm.config.vm import VmConfig
from plugvm.device_config import PCI_KEYS, PciFields, pci_from_json, pci_from_options
from plugvm.device_manager import RemovalPendingError, UnknownDeviceError
from plugvm.devices.ged import PCI_DEVICES_CHANGED
from plugvm.devices.pci_hotplug import B0EJ, PCID, PCIU, PSEG
from plugvm.kvm import Kvm
from plugvm.machine import Machine
from plugvm.plugins import DeviceType, Registry
from plugvm.serial_port import ConsoleBackend, Consoles
from plugvm.testing.tiny_kernel import bzimage
from plugvm.virtio import common_config as cc
from plugvm.virtio.device import VirtioDevice

from test_api import Plugvm, errors, vm_body, wait_serial


# --- a device type only this test registers: the plugin contract ---------------------------------

@dataclass(frozen=True, kw_only=True)
class FrobConfig(PciFields):
    color: str = "blue"

    def to_json(self):
        return {"color": self.color, **self.pci_json()}


class Frob(VirtioDevice):
    device_type = 42
    queue_sizes = (16,)
    closed = []

    def __init__(self, config):
        self.config = config

    def close(self):
        Frob.closed.append(self.config.id)


def _frob_parse(text):
    o = Options(text, Where("--frob"), keys=("color", *PCI_KEYS))
    return FrobConfig(color=o.text("color") or "blue", **pci_from_options(o))


def _frob_json(body):
    j = JsonObject(body, Where("frob", json=True))
    config = FrobConfig(color=j.string("color", "blue"), **pci_from_json(j))
    j.close()
    return config


FROB = DeviceType(name="frob", kind="virtio", cli_option="--frob", config_key="frobs", api_verb="vm.add-frob",
                  id_prefix="_frob", parse=_frob_parse, from_json=_frob_json,
                  create=lambda config, env: Frob(config))


class _Plugin:
    @staticmethod
    def plugvm_device_types():
        return [FROB]


@contextmanager
def frob_machine(tmp_path, frobs=(FrobConfig(),), **config):
    """A Machine of a spinning kernel with the frob plugin and the rng, `frobs` at boot
    and the rest of its VmConfig from `config`."""
    kernel = tmp_path / "spin.bzImage"
    kernel.write_bytes(bzimage(b"", poweroff=False))
    registry = Registry()
    registry.register(_Plugin, "test-frob")
    registry.register(type("Rng", (), {"plugvm_device_types": staticmethod(rng_types)}), "plugvm")
    kvm = Kvm()
    backend = Consoles(serial=ConsoleBackend("null"))
    m = Machine(kvm, VmConfig(payload=PayloadConfig(kernel=kernel), devices={"frobs": tuple(frobs)}, **config),
                backend, kvm.supported_cpuid(), registry)
    try:
        yield m
    finally:
        m.close()
        backend.close()
        kvm.close()


@pytest.fixture
def machine(tmp_path):
    with frob_machine(tmp_path) as m:
        yield m


def mmio_read(m, addr, size=4):
    data = memoryview(bytearray(size))
    m.mmio.read(addr, data)
    return int.from_bytes(data, "little")


def mmio_write(m, addr, value, size=4):
    m.mmio.write(addr, memoryview(bytearray(value.to_bytes(size, "little"))))


def scan(m):
    """What the guest's GED handler and PCNT see: (GED flags, PCIU, PCID) of segment 0."""
    base = m.platform["pci_hotplug"]
    flags = mmio_read(m, m.platform["ged"], 1)
    mmio_write(m, base + PSEG, 0)
    return flags, mmio_read(m, base + PCIU), mmio_read(m, base + PCID)


def eject(m, bitmap):
    mmio_write(m, m.platform["pci_hotplug"] + B0EJ, bitmap)


def threads():
    return sorted(t.name for t in threading.enumerate())


def fds():
    # Garbage of earlier tests that holds an fd (a pipe, a socket) is collected first, as
    # the conformance suite's Resources.now() does: else it may close mid-count.
    gc.collect()
    return len(os.listdir("/proc/self/fd"))


def test_a_type_registered_only_by_a_test_is_hot_added_and_ejected_with_nothing_left(machine):
    assert machine.devices.devices["__rng"].slot == 1 and machine.devices.devices["_frob0"].slot == 2
    before_threads, before_fds = threads(), fds()
    info = machine.add_device(FROB, FrobConfig(id="hot", color="red"))
    assert info.to_json() == {"id": "hot", "bdf": "0000:00:03.0"}
    attached = machine.devices.devices["hot"]
    assert attached.bar >= 1 << 32 and attached.transport.config.bars[0].is_64bit     # as ch's hotplugged devices
    assert machine.mmio.find(attached.bar, 4)[0] is attached.transport
    assert scan(machine) == (PCI_DEVICES_CHANGED, 1 << 3, 0)
    assert scan(machine) == (0, 0, 0)             # read-to-clear, as the AML expects
    assert "virtio-hot" in threads()

    machine.request_removal("hot")
    assert scan(machine) == (PCI_DEVICES_CHANGED, 0, 1 << 3)
    assert not attached.gone.is_set()
    eject(machine, 1 << 3)
    assert attached.gone.is_set() and Frob.closed[-1] == "hot"
    assert "hot" not in machine.devices.devices and machine.mmio.find(attached.bar, 4) is None
    assert 3 not in machine.segment.devices
    assert threads() == before_threads and fds() == before_fds
    # The slot and the BAR are free again: the next add gets both back.
    again = machine.add_device(FROB, FrobConfig(id="again"))
    assert again.bdf == "0000:00:03.0" and machine.devices.devices["again"].bar == attached.bar


def test_a_hostile_guest_ejects_nothing_it_was_not_asked_to(machine):
    machine.add_device(FROB, FrobConfig(id="hot"))
    before, closed = dict(machine.devices.devices), list(Frob.closed)
    eject(machine, 0xFFFF_FFFF)                   # every slot, the host bridge's, empty ones
    eject(machine, 1 << 31)                       # a slot never announced
    assert machine.devices.devices == before and Frob.closed == closed
    # Accesses of the wrong width and selectors past the segments change nothing.
    base = machine.platform["pci_hotplug"]
    mmio_write(machine, base + B0EJ, 0xFF, size=1)
    mmio_write(machine, base + PSEG, 7)
    assert mmio_read(machine, base + PSEG) == 0
    assert mmio_read(machine, base + PCIU, size=2) == 0
    machine.request_removal("hot")
    transport = machine.devices.devices["hot"].transport
    eject(machine, 1 << 3)
    eject(machine, 1 << 3)                        # twice: the second finds nothing to free
    assert transport.closed and "hot" not in machine.devices.devices
    # A vCPU that found the device on the bus just before the eject reads all ones.
    data = memoryview(bytearray(4))
    transport.read(0, data)
    transport.write(0x14, memoryview(bytearray(b"\x0f")))
    assert bytes(data) == b"\xff" * 4


def test_removal_is_asked_once_and_built_in_devices_stay(machine):
    with pytest.raises(UnknownDeviceError):
        machine.request_removal("nothing")
    machine.request_removal("_frob0")
    with pytest.raises(RemovalPendingError):
        machine.request_removal("_frob0")
    assert machine.devices.device_tree()["_frob0"]["pending_removal"] is True
    with pytest.raises(Exception, match="built-in"):
        machine.request_removal("__rng")


def test_driver_ok_is_what_a_wait_sees(machine):
    transport = machine.devices.devices["_frob0"].transport
    assert not transport.driver_ok.is_set()

    def wr(offset, size, value):
        transport.write(offset, memoryview(bytearray(value.to_bytes(size, "little"))))
    wr(0x14, 1, cc.ACKNOWLEDGE | cc.DRIVER)
    wr(0x08, 4, 1)
    wr(0x0C, 4, 1)
    wr(0x14, 1, cc.ACKNOWLEDGE | cc.DRIVER | cc.FEATURES_OK)
    wr(0x14, 1, cc.ACKNOWLEDGE | cc.DRIVER | cc.FEATURES_OK | cc.DRIVER_OK)
    assert transport.driver_ok.is_set()
    wr(0x14, 1, 0)                                # reset
    assert not transport.driver_ok.is_set()


# --- the API, on a running tiny guest ------------------------------------------------------------

@pytest.fixture
def running(tmp_path):
    kernel = tmp_path / "spin.bzImage"
    kernel.write_bytes(bzimage(b"tiny guest up\n", poweroff=False))
    p = Plugvm(tmp_path)
    # No virtio-console (ch's default is Tty, at 00:01.0): the rng alone holds slot 1.
    assert p.put("vm.create", vm_body(kernel, tmp_path, console={"mode": "Off"})).status_code == 204
    assert p.put("vm.boot").status_code == 204
    wait_serial(tmp_path, 1)
    yield p
    p.close()


def resources(pid):
    fds = sorted(os.readlink(f"/proc/{pid}/fd/{fd}") for fd in os.listdir(f"/proc/{pid}/fd"))
    return fds, len(os.listdir(f"/proc/{pid}/task"))


def disk(tmp_path, name="d.img"):
    path = tmp_path / name
    path.write_bytes(bytes(1 << 20))
    return str(path)


def test_hot_add_answers_ch_s_pci_device_info_and_removal_is_pending_until_ejected(running, tmp_path):
    added = running.put("vm.add-disk", {"path": disk(tmp_path)})
    assert added.status_code == 200 and added.json() == {"id": "_disk0", "bdf": "0000:00:02.0"}
    config = running.get("vm.info").json()["config"]
    assert config["disks"] == [{**config["disks"][0], "id": "_disk0", "pci_device_id": 2}]
    assert running.put("vm.add-disk", {"path": disk(tmp_path), "id": "_disk0"}).status_code == 409
    assert running.put("vm.remove-device", {"id": "nothing"}).status_code == 404
    assert running.put("vm.remove-device", {"id": "_disk0"}).status_code == 204
    info = running.get("vm.info").json()
    assert info["config"].get("disks", []) == [] and info["device_tree"]["_disk0"]["pending_removal"] is True
    again = running.put("vm.remove-device", {"id": "_disk0"})
    assert again.status_code == 409 and "pending" in errors(again)[-1]
    # The id stays taken until the guest ejects it (this one never will).
    assert running.put("vm.add-disk", {"path": disk(tmp_path), "id": "_disk0"}).status_code == 409
    assert running.put("vm.remove-device", {"id": "__rng"}).status_code == 400


def test_prefer_wait_that_runs_out_says_so_with_202(running, tmp_path):
    added = running.client.put("vm.add-disk", content=json.dumps({"path": disk(tmp_path), "id": "w"}),
                               headers={"Prefer": "respond-async, wait=1"})
    # The tiny guest has no driver: the time runs out, and the answer says the device is there.
    assert added.status_code == 202 and added.json() == {"id": "w", "bdf": "0000:00:02.0"}
    assert added.headers["Preference-Applied"] == "wait=1"
    removed = running.client.put("vm.remove-device", content=json.dumps({"id": "w"}), headers={"Prefer": "wait=1"})
    assert removed.status_code == 202 and removed.json() == {"id": "w", "pending_removal": True}
    bad = running.client.put("vm.add-disk", content=json.dumps({"path": disk(tmp_path)}), headers={"Prefer": "wait=x"})
    assert bad.status_code == 400


@pytest.mark.parametrize("body, field", [
    ({"path": "/nonexistent/disk.img"}, "path"),
    ({"path": 7}, "path"),
    ({"path": "PLACEHOLDER", "readonly": "yes"}, "readonly"),
    ({"path": "PLACEHOLDER", "pci_device_id": 1}, "pci_device_id"),      # the rng's slot
    ({"path": "PLACEHOLDER", "id": "__rng"}, "id"),
])
def test_bad_hot_adds_change_nothing(running, tmp_path, body, field):
    body = {k: (disk(tmp_path) if v == "PLACEHOLDER" else v) for k, v in body.items()}
    pid = running.proc.pid
    before_info = running.get("vm.info").json()      # first: the client's connection is then open
    before = resources(pid)
    response = running.put("vm.add-disk", body)
    assert 400 <= response.status_code < 500, response.text
    assert field in " ".join(errors(response))
    assert running.get("vm.info").json() == before_info
    assert resources(pid) == before
    # The slot nobody got is still the next one.
    assert running.put("vm.add-disk", {"path": disk(tmp_path)}).json()["bdf"] == "0000:00:02.0"


def test_a_tap_that_cannot_be_opened_changes_nothing(running, tmp_path):
    pid = running.proc.pid
    before_info = running.get("vm.info").json()      # first: the client's connection is then open
    before = resources(pid)
    response = running.put("vm.add-net", {"tap": "lo"})          # not a tap: the kernel refuses TUNSETIFF
    assert response.status_code == 400 and "tap" in " ".join(errors(response))
    after = resources(pid)
    assert running.get("vm.info").json() == before_info
    assert after == before, (set(after[0]) ^ set(before[0]))


def test_when_all_31_slots_are_taken_the_next_add_is_refused(running, tmp_path):
    image = disk(tmp_path)
    for n in range(30):                           # slot 1 is the rng's
        added = running.put("vm.add-disk", {"path": image, "readonly": True})
        assert added.status_code == 200, added.text
    pid = running.proc.pid
    running.get("vm.info")
    before = resources(pid)
    refused = running.put("vm.add-disk", {"path": image, "readonly": True})
    assert refused.status_code == 400 and "slots" in errors(refused)[-1]
    assert resources(pid) == before


def test_a_hot_add_that_fails_tells_the_guest_nothing_and_leaves_nothing(machine):
    def broken(config, env):
        raise OSError("the backend is gone")
    before_threads, before_fds, before = threads(), fds(), dict(machine.devices.devices)
    scan(machine)
    with pytest.raises(OSError):
        machine.add_device(DeviceType(**{**FROB.__dict__, "create": broken}), FrobConfig(id="broken"))
    assert scan(machine) == (0, 0, 0)
    assert machine.devices.devices == before and 3 not in machine.segment.devices
    assert threads() == before_threads and fds() == before_fds
    assert machine.add_device(FROB, FrobConfig(id="next")).bdf == "0000:00:03.0"


def _program_bar(transport, addr):
    """What Linux does: decode off, size BAR0 (64-bit: two registers), write the new address, decode on."""
    config = transport.config

    def wr(offset, size, value):
        config.write(offset, memoryview(bytearray(value.to_bytes(size, "little"))))
    wr(0x04, 2, 0)
    wr(0x10, 4, 0xFFFF_FFFF)
    wr(0x14, 4, 0xFFFF_FFFF)
    wr(0x10, 4, addr & 0xFFFF_FFFF)
    wr(0x14, 4, addr >> 32)
    wr(0x04, 2, 0x6)


def test_a_bar_the_guest_moves_takes_its_bus_range_and_notify_addresses_along(machine):
    machine.add_device(FROB, FrobConfig(id="hot"))
    attached = machine.devices.devices["hot"]
    old, new = attached.bar, attached.bar + (1 << 20)
    _program_bar(attached.transport, new)
    assert attached.bar == new and attached.transport.bar_addr == new
    assert machine.mmio.find(old, 4) is None and machine.mmio.find(new, 4)[0] is attached.transport
    assert machine.devices.device_tree()["_virtio-pci-hot"]["resources"][0]["PciBar"]["base"] == new
    assert machine.segment.mem64.allocations().count((new, 512 << 10)) == 1
    assert (old, 512 << 10) not in machine.segment.mem64.allocations()
    # Onto another device's BAR, or outside the windows: refused, the device stays.
    other = machine.devices.devices["_frob0"].bar
    for hostile in (other, 0xFEC0_0000):
        _program_bar(attached.transport, hostile)
        assert attached.bar == new and machine.mmio.find(new, 4)[0] is attached.transport
    assert machine.mmio.find(other, 4)[0] is machine.devices.devices["_frob0"].transport
    # The eject releases it from where it went.
    machine.request_removal("hot")
    eject(machine, 1 << 3)
    assert machine.mmio.find(new, 4) is None and (new, 512 << 10) not in machine.segment.mem64.allocations()
