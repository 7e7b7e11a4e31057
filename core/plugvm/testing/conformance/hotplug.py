"""HotplugTests: the device hot-added to a Machine on this host's /dev/kvm and removed
again, the test playing the guest's ACPI (it reads PCIU/PCID and writes B0EJ, as PCNT
and _EJ0 do): everything the add took is released at the eject, the slot and the BAR go
to the next add, and a hot-add that fails leaves nothing attached and tells the guest
nothing. A type that is not removable is refused removal, cleanly."""

from __future__ import annotations

import dataclasses

import pytest

from plugvm.device_manager import RemovalNotAllowedError
from plugvm.devices.pci_hotplug import B0EJ, PCID, PCIU, PSEG
from plugvm.errors import PlugvmError
from plugvm.testing.conformance import capabilities as caps
from plugvm.testing.conformance.fixtures import substitute
from plugvm.testing.conformance.resources import Resources


def _read(machine, addr: int, size: int = 4) -> int:
    data = memoryview(bytearray(size))
    machine.mmio.read(addr, data)
    return int.from_bytes(data, "little")


def _write(machine, addr: int, value: int, size: int = 4) -> None:
    machine.mmio.write(addr, memoryview(bytearray(value.to_bytes(size, "little"))))


def scan(machine, segment: int = 0) -> tuple[int, int]:
    """(PCIU, PCID) of `segment`, as the guest's PCNT reads them (read-to-clear)."""
    base = machine.platform["pci_hotplug"]
    _write(machine, base + PSEG, segment)
    return _read(machine, base + PCIU), _read(machine, base + PCID)


def eject(machine, slot: int) -> None:
    _write(machine, machine.platform["pci_hotplug"] + B0EJ, 1 << slot)


class HotplugTests:
    """Hot-add and removal through the device manager, in-process."""

    def _hot_config(self, device_type, device_configs, index: int, device_id: str):
        config = device_configs[min(index, len(device_configs) - 1)]
        return dataclasses.replace(config, id=device_id)

    def test_hot_add_then_eject_frees_everything_and_the_slot_is_reused(self, device_type, device_configs,
                                                                        conformance_machine, capabilities):
        caps.require(capabilities, caps.HOTPLUG, device_type.name)
        m, name = conformance_machine, repr(device_type.name)
        scan(m)
        before = Resources.now()
        info = m.add_device(device_type, self._hot_config(device_type, device_configs, 0, "conformance0"))
        attached = m.devices.devices[info.id]
        slot = attached.slot
        assert scan(m) == (1 << slot, 0), f"device {name}: hot-added in slot {slot} but the guest was not told (PCIU)"
        if caps.REMOVE not in capabilities:
            with pytest.raises(RemovalNotAllowedError):
                m.request_removal(info.id)
            return
        m.request_removal(info.id)
        assert scan(m) == (0, 1 << slot), f"device {name}: its removal was not announced (PCID bit {slot})"
        eject(m, slot)
        assert attached.gone.is_set() and info.id not in m.devices.devices, (
            f"device {name}: the guest's eject of slot {slot} did not release it")
        leaks = before.leaks_settled()
        assert not leaks, f"device {name}: hot-add then eject left {'; '.join(leaks)}"
        # The next add of the same type gets the freed slot and BAR back. A second option
        # text, where given, is used: a backend may serve one connection only (virtiofsd).
        again = m.add_device(device_type, self._hot_config(device_type, device_configs, 1, "conformance1"))
        assert (again.bdf, m.devices.devices[again.id].bar) == (info.bdf, attached.bar), (
            f"device {name}: after the eject, the next add got {again.bdf} instead of the freed {info.bdf}")

    def test_built_in_devices_are_refused_removal(self, device_type, device_config, conformance_machine,
                                                  capabilities):
        if caps.REMOVE in capabilities:
            pytest.skip(f"device type {device_type.name!r} declares 'remove'")
        m = conformance_machine
        present = [a for a in m.devices.devices.values() if a.type.name == device_type.name]
        if not present:
            pytest.skip(f"device type {device_type.name!r}: the VM config (`vm_config`) has no such device at boot")
        attached = present[0]
        with pytest.raises(RemovalNotAllowedError):
            m.request_removal(attached.id)
        assert scan(m)[1] == 0 and not attached.removing, (
            f"device {device_type.name!r}: a refused removal still told the guest")

    def test_a_hot_add_that_fails_leaves_nothing_and_tells_the_guest_nothing(self, device_type, failing_options,
                                                                             backend, device_configs,
                                                                             conformance_machine,
                                                                             capabilities):
        caps.require(capabilities, caps.HOTPLUG, device_type.name)
        if not failing_options:
            pytest.skip("the `failing_options` fixture gives none")
        m, name = conformance_machine, repr(device_type.name)
        scan(m)
        devices = dict(m.devices.devices)
        free = [s for s in range(1, 32) if s not in m.segment.devices][0]
        for text in failing_options:
            text = substitute(text, backend)
            before = Resources.now()
            with pytest.raises(PlugvmError):
                m.add_device(device_type, device_type.parse(text))
            assert m.devices.devices == devices, f"device {name}: a failed hot-add of {text!r} left a device attached"
            assert scan(m) == (0, 0), f"device {name}: a failed hot-add of {text!r} told the guest (PCIU/PCID)"
            leaks = before.leaks_settled()
            assert not leaks, f"device {name}: a failed hot-add of {text!r} left {'; '.join(leaks)}"
        # The slot nobody got is still the next one.
        assert m.add_device(device_type, self._hot_config(device_type, device_configs, 0, "conformance2")).bdf \
            .endswith(f":{free:02x}.0"), f"device {name}: a failed hot-add kept slot {free}"
