"""Several PCI segments (--platform num_pci_segments, Kata puts virtio-fs on segment 1), on
this host's KVM, the test playing the guest: each segment its ECAM MiB (MCFG), its share
of the BAR windows and its PCxx in the DSDT; devices on segment 1 from slot 0 (no host
bridge there), BDFs 0001:00:SS.0; hot-add and eject through PSEG; and the API's answer."""

import struct

import pytest

from plugvm import layout
from plugvm.config.platform import PlatformConfig
from plugvm.devices.ged import PCI_DEVICES_CHANGED
from plugvm.devices.pci_hotplug import B0EJ, PSEG
from plugvm.testing.conformance.hotplug import scan
from plugvm.testing.tiny_kernel import bzimage

from test_api import Plugvm, vm_body
from test_hotplug import FROB, FrobConfig, frob_machine, mmio_read, mmio_write

VIRTIO_VENDOR = 0x1AF4


@pytest.fixture
def machine(tmp_path):
    with frob_machine(tmp_path, (FrobConfig(id="f1", pci_segment=1), FrobConfig(id="f0")),
                      platform=PlatformConfig(num_pci_segments=3)) as m:
        yield m


def ecam_vendor(m, segment: int, slot: int) -> int:
    return mmio_read(m, layout.PCI_MMCONFIG_START + (segment << 20) + (slot << 15), 2)


def test_each_segment_has_its_ecam_windows_and_slots_from_0(machine):
    m = machine
    assert [s.segment_id for s in m.segments] == [0, 1, 2]
    # Segment 1 has no host bridge: its first device is in slot 0.
    f1 = m.devices.devices["f1"]
    assert (f1.segment, f1.slot) == (1, 0)
    assert m.devices.devices["__rng"].slot == 1 and m.devices.devices["f0"].slot == 2
    assert ecam_vendor(m, 1, 0) == VIRTIO_VENDOR
    assert ecam_vendor(m, 0, 0) == 0x8086                     # segment 0's host bridge
    assert ecam_vendor(m, 2, 0) == 0xFFFF                     # nothing on segment 2
    assert ecam_vendor(m, 0, 3) == 0xFFFF
    # The BAR windows are shared out, one share per segment, none overlapping.
    windows = [(s.mem32.base, s.mem32.end, s.mem64.base, s.mem64.end) for s in m.segments]
    for (a32, e32, a64, e64), (b32, _, b64, _) in zip(windows, windows[1:]):
        assert e32 <= b32 and e64 <= b64
    assert windows[0][0] == layout.MEM_32BIT_DEVICES_START
    assert windows[1][0] <= f1.bar < windows[1][1]           # its BAR in its own segment's window
    tree = m.devices.device_tree()
    assert tree["_virtio-pci-f1"]["pci_bdf"] == "0001:00:00.0"


def test_the_acpi_tables_describe_every_segment(machine):
    m = machine
    base = m.memory.read(layout.RSDP_POINTER, 36)
    assert base[:8] == b"RSD PTR "
    # The MCFG: one allocation per segment, its ECAM at 0xE800_0000 + segment MiB, bus 0.
    xsdt = struct.unpack_from("<Q", base, 24)[0]
    header = m.memory.read(xsdt, 36)
    entries = struct.unpack_from(f"<{(struct.unpack_from('<I', header, 4)[0] - 36) // 8}Q",
                                 m.memory.read(xsdt + 36, struct.unpack_from('<I', header, 4)[0] - 36))
    tables = {m.memory.read(addr, 4): addr for addr in entries}
    mcfg = tables[b"MCFG"]
    length = struct.unpack_from("<I", m.memory.read(mcfg, 8), 4)[0]
    body = m.memory.read(mcfg + 44, length - 44)
    allocations = [struct.unpack_from("<QHBB", body, 16 * i) for i in range(len(body) // 16)]
    assert allocations == [(layout.PCI_MMCONFIG_START + (i << 20), i, 0, 0) for i in range(3)]
    dsdt = struct.unpack_from("<Q", m.memory.read(tables[b"FACP"], 148), 140)[0]
    dsdt_bytes = m.memory.read(dsdt, struct.unpack_from("<I", m.memory.read(dsdt, 8), 4)[0])
    for name in (b"PC00", b"PC01", b"PC02", b"PHPR", b"MBRD"):
        assert name in dsdt_bytes


def test_hot_add_and_eject_on_segment_2_go_through_pseg(machine):
    m = machine
    for segment in range(3):
        scan(m, segment)
    info = m.add_device(FROB, FrobConfig(id="hot", pci_segment=2))
    assert info.to_json() == {"id": "hot", "bdf": "0002:00:00.0"}
    assert mmio_read(m, m.platform["ged"], 1) == PCI_DEVICES_CHANGED
    assert scan(m, 0) == (0, 0) and scan(m, 2) == (1, 0)
    m.request_removal("hot")
    assert scan(m, 2) == (0, 1)
    # An eject of slot 0 on segment 0 (the host bridge) or 1 (f1, not being removed) is ignored.
    for segment in (0, 1):
        mmio_write(m, m.platform["pci_hotplug"] + PSEG, segment)
        mmio_write(m, m.platform["pci_hotplug"] + B0EJ, 1)
    assert {"hot", "f1"} <= set(m.devices.devices)
    mmio_write(m, m.platform["pci_hotplug"] + PSEG, 2)
    mmio_write(m, m.platform["pci_hotplug"] + B0EJ, 1)
    assert "hot" not in m.devices.devices and ecam_vendor(m, 2, 0) == 0xFFFF
    # A segment the VM does not have: PSEG ignores it, and an add is refused naming it.
    mmio_write(m, m.platform["pci_hotplug"] + PSEG, 7)
    assert mmio_read(m, m.platform["pci_hotplug"] + PSEG) == 2
    with pytest.raises(Exception, match="pci_segment=3 does not exist: the VM has 3 PCI segments"):
        m.add_device(FROB, FrobConfig(id="nowhere", pci_segment=3))
    assert "nowhere" not in m.devices.devices


def test_the_api_takes_segments_and_answers_their_bdfs(tmp_path):
    spin = tmp_path / "spin.bzImage"
    spin.write_bytes(bzimage(b"tiny guest up\n", poweroff=False))
    image = tmp_path / "disk.img"
    image.write_bytes(bytes(1 << 20))
    p = Plugvm(tmp_path)
    try:
        refused = p.put("vm.create", vm_body(spin, tmp_path, disks=[{"path": str(image), "pci_segment": 1}]))
        assert refused.status_code == 400 and "pci_segment=1 does not exist" in refused.json()[-1]
        body = vm_body(spin, tmp_path, platform={"num_pci_segments": 2},
                       disks=[{"path": str(image), "pci_segment": 1, "id": "d1"}])
        assert p.put("vm.create", body).status_code == 204
        assert p.put("vm.boot").status_code == 204
        info = p.get("vm.info").json()
        assert info["config"]["platform"] == {"num_pci_segments": 2}
        assert info["device_tree"]["_virtio-pci-d1"]["pci_bdf"] == "0001:00:00.0"
        added = p.put("vm.add-disk", {"path": str(image), "pci_segment": 1, "readonly": True})
        assert added.status_code == 200 and added.json()["bdf"] == "0001:00:01.0"
        added = p.put("vm.add-disk", {"path": str(image), "readonly": True})
        assert added.status_code == 200 and added.json()["bdf"].startswith("0000:00:")
        refused = p.put("vm.add-disk", {"path": str(image), "pci_segment": 2})
        assert refused.status_code == 400 and "pci_segment=2 does not exist" in refused.json()[-1]
    finally:
        p.close()
