"""The DSDT fragments of a PCI segment, shaped as cloud-hypervisor's (vmm/src/pci_segment.rs
`impl Aml for PciSegment`, vmm/src/device_manager.rs `impl Aml for DeviceManager`;
shared/reference/cloud-hypervisor-notes.md §3e, §3h):

* \\_SB_.PCxx, the host bridge (PNP0A08, PNP0A03), with its windows in _CRS, a _PRT
  for INTA of each of the 32 slots, and the slot devices S000..S031;
* with hotplug, \\_SB_.PHPR, the hotplug controller's registers and methods, and the
  PCNT/DVNT methods and _EJ0s that use them;
* \\_SB_.MBRD, a motherboard resource device (PNP0C02) reserving the ECAM windows the
  MCFG table announces (PCI Firmware Spec 3.2, 4.1.2: Linux ignores an MCFG window
  that no such device reserves).
"""

from __future__ import annotations

from typing import Sequence

from plugvm import layout
from plugvm.acpi.aml import (Aml, Buffer, Device, DWordMemory, EisaId, Io, Memory32Fixed, Method, Name, Package,
                             QWordMemory, ResourceTemplate, Return, Scope, WordBusNumber, WordIo)
from plugvm.acpi.aml_extra import (Acquire, And, Arg, Field, FieldAccess, FieldUpdate, If, LEqual, Local, MethodCall,
                                   Mutex, Notify, OperationRegion, RegionSpace, Release, ShiftLeft, Store, ToUuid)
from plugvm.acpi.errors import AcpiError

SLOTS = 32
# cloud-hypervisor takes eight GSIs from its IOAPIC pool (which starts at 5) before any
# other device, and shares them: slot i's INTA is GSI 5 + i % 8.
PCI_INTX_IRQS = tuple(range(5, 13))
HOTPLUG_REGS_SIZE = 0x10          # PCIU, PCID, B0EJ, PSEG: one DWord each
DEVICE_CHECK, EJECT_REQUEST = 1, 3                    # Notify values (5.6.6)
DEVICE_LABELING_DSM = "e5c937d0-3553-4d7a-9117-ea4d19c3434d"   # PCI Firmware Spec 3.3, 4.6.1
PHPR = "\\_SB_.PHPR"


def segment_device_name(segment_id: int) -> str:
    """cloud-hypervisor's name for a segment's host bridge: PC00, PC01, ... PC0F, PC10."""
    return f"PC{segment_id:02X}"


def slot_name(slot: int) -> str:
    return f"S{slot:03d}"


def _window(what: str, window: tuple[int, int], limit: int) -> tuple[int, int]:
    start, size = window
    if size <= 0 or start < 0 or start + size > limit:
        raise AcpiError(f"PCI {what} window {start:#x}+{size:#x} is empty or past {limit:#x}")
    return start, start + size - 1


def host_bridge_crs(segment_id: int, mmconfig_base: int, mem32: tuple[int, int],
                    mem64: tuple[int, int]) -> ResourceTemplate:
    """Bus 0 only; for segment 0 the 0xCF8 config ports and all other I/O ports; the
    segment's own ECAM MiB, as cloud-hypervisor lists it; the two BAR windows."""
    mem32_min, mem32_max = _window("mem32", mem32, 1 << 32)
    mem64_min, mem64_max = _window("mem64", mem64, 1 << 64)
    legacy_io = [Io(layout.PCI_CONFIG_IO_PORT, layout.PCI_CONFIG_IO_PORT, 1, 8)] if segment_id == 0 else []
    io_windows = [WordIo(0, 0x0CF7), WordIo(0x0D00, 0xFFFF)] if segment_id == 0 else []
    return ResourceTemplate(WordBusNumber(0, 0), *legacy_io,
                            Memory32Fixed(mmconfig_base, layout.PCI_MMCONFIG_SEGMENT_SIZE),
                            DWordMemory(mem32_min, mem32_max), QWordMemory(mem64_min, mem64_max), *io_windows)


def routing_table(irqs: Sequence[int]) -> Package:
    """_PRT: {address (slot << 16 | 0xFFFF: any function), pin 0 (INTA), source 0 (so the
    last field is a GSI), GSI} for each slot (6.2.13). Only INTA, as cloud-hypervisor."""
    return Package(*[Package(slot << 16 | 0xFFFF, 0, 0, irqs[slot % len(irqs)]) for slot in range(SLOTS)])


def device_labeling_dsm() -> Method:
    """_DSM for the Device Labeling Interface: function 0 reports functions 0 and 5;
    function 5 returns 0, "ignore the PCI boot configuration" not being asked for."""
    return Method("_DSM", 4,
                  If(LEqual(Arg(0), ToUuid(DEVICE_LABELING_DSM)),
                     If(LEqual(Arg(2), 0), Return(Buffer(b"\x21"))),
                     If(LEqual(Arg(2), 5), Return(0))),
                  Return(Buffer(b"\x00")))


def slot_device(slot: int, hotplug: bool) -> Device:
    """S000..S031: _SUN and _ADR (device slot << 16, function 0); with hotplug, an _EJ0
    that asks the controller to eject the slot on this segment."""
    eject = [Method("_EJ0", 1, MethodCall(f"{PHPR}.PCEJ", "_SUN", "_SEG"), serialized=True)] if hotplug else []
    return Device(slot_name(slot), Name("_SUN", slot), Name("_ADR", slot << 16), *eject)


def slot_notify_methods() -> list[Method]:
    """DVNT (bitmap, event): Notify each slot whose bit is set. PCNT: select this
    segment and notify the slots added (Device Check) and to be removed (Eject Request)."""
    checks = []
    for slot in range(SLOTS):
        checks += [And(Arg(0), 1 << slot, Local(0)), If(LEqual(Local(0), 1 << slot), Notify(slot_name(slot), Arg(1)))]
    return [Method("DVNT", 2, *checks, serialized=True),
            Method("PCNT", 0,
                   Acquire(f"{PHPR}.BLCK"),
                   Store("_SEG", f"{PHPR}.PSEG"),
                   MethodCall("DVNT", f"{PHPR}.PCIU", DEVICE_CHECK),
                   MethodCall("DVNT", f"{PHPR}.PCID", EJECT_REQUEST),
                   Release(f"{PHPR}.BLCK"),
                   serialized=True)]


def host_bridge(segment_id: int, mmconfig_base: int, mem32: tuple[int, int], mem64: tuple[int, int], *,
                hotplug: bool = False, irqs: Sequence[int] = PCI_INTX_IRQS, proximity_domain: int = 0) -> Device:
    """Device PCxx, to be placed in \\_SB_. Unlike cloud-hypervisor's it has no _ADR 0:
    a device has a _HID or an _ADR, not both (6.1), and iasl warns of the pair."""
    if not 0 <= segment_id <= 0xFF:
        raise AcpiError(f"PCI segment {segment_id} does not fit a PCxx name (0..0xFF)")
    if not irqs:
        raise AcpiError("PCI _PRT: no INTx IRQs given")
    return Device(segment_device_name(segment_id),
                  Name("_HID", EisaId("PNP0A08")),
                  Name("_CID", EisaId("PNP0A03")),
                  Name("_SEG", segment_id),
                  Name("_UID", segment_id),
                  Name("_CCA", 1),          # DMA is cache-coherent
                  Name("SUPP", 0),          # cloud-hypervisor's, unused: an _OSC was never written
                  Method("_PXM", 0, Return(proximity_domain)),
                  device_labeling_dsm(),
                  Name("_CRS", host_bridge_crs(segment_id, mmconfig_base, mem32, mem64)),
                  *[slot_device(slot, hotplug) for slot in range(SLOTS)],
                  *(slot_notify_methods() if hotplug else []),
                  Name("_PRT", routing_table(irqs)))


def hotplug_controller(address: int, size: int, segment_ids: Sequence[int]) -> Device:
    """Device PHPR: the registers (PCIU/PCID read-and-clear bitmaps of slots added and
    to remove, B0EJ the eject bitmap, PSEG the segment they refer to), PCEJ (slot, seg)
    and PSCN, which the GED calls on a PCI change to rescan every segment."""
    if size < HOTPLUG_REGS_SIZE:
        raise AcpiError(f"PCI hotplug region {address:#x}+{size:#x} is smaller than {HOTPLUG_REGS_SIZE:#x}")
    window = (DWordMemory if address + size <= 1 << 32 else QWordMemory)(address, address + size - 1)
    return Device("PHPR",
                  Name("_HID", EisaId("PNP0A06")),
                  Name("_STA", 0x0B),       # present, enabled, functioning, not shown
                  Name("_UID", "PCI Hotplug Controller"),
                  Mutex("BLCK", 0),
                  Name("_CRS", ResourceTemplate(window)),
                  OperationRegion("PCST", RegionSpace.SYSTEM_MEMORY, address, HOTPLUG_REGS_SIZE),
                  Field("PCST", [("PCIU", 32), ("PCID", 32), ("B0EJ", 32), ("PSEG", 32)],
                        access=FieldAccess.DWORD, update=FieldUpdate.WRITE_AS_ZEROS),
                  Method("PCEJ", 2,
                         Acquire("BLCK"), Store(Arg(1), "PSEG"), ShiftLeft(1, Arg(0), "B0EJ"), Release("BLCK"),
                         Return(0),
                         serialized=True),
                  Method("PSCN", 0,
                         *[MethodCall(f"\\_SB_.{segment_device_name(s)}.PCNT") for s in segment_ids],
                         serialized=True))


def mmconfig_reservation(mmconfig_bases: Sequence[int]) -> Device:
    """Device MBRD: reserves each segment's ECAM MiB for the MCFG."""
    return Device("MBRD",
                  Name("_HID", EisaId("PNP0C02")),
                  Name("_UID", 0),
                  Name("_CRS", ResourceTemplate(*[Memory32Fixed(base, layout.PCI_MMCONFIG_SEGMENT_SIZE)
                                                  for base in mmconfig_bases])))


def pci_segments_aml(segments: Sequence[tuple[int, int, tuple[int, int], tuple[int, int]]], *,
                     hotplug_region: tuple[int, int] | None = None, irqs: Sequence[int] = PCI_INTX_IRQS) -> list[Aml]:
    """Everything a machine's PCI segments put in its DSDT, in cloud-hypervisor's order:
    [PHPR,] PC00, PC01, ..., MBRD, all in \\_SB_. Each segment is (id, ECAM base, mem32,
    mem64), the windows (start, size); hotplug_region is the (address, size) of the
    hotplug registers, shared by every segment through PSEG, None without hotplug."""
    hotplug = hotplug_region is not None
    ids = [segment_id for segment_id, *_ in segments]
    devices: list[Aml] = [hotplug_controller(*hotplug_region, ids)] if hotplug else []
    devices += [host_bridge(segment_id, base, mem32, mem64, hotplug=hotplug, irqs=irqs)
                for segment_id, base, mem32, mem64 in segments]
    devices.append(mmconfig_reservation([base for _, base, _, _ in segments]))
    return [Scope("\\_SB_", *devices)]


def pci_segment_aml(segment_id: int, mmconfig_base: int, mem32: tuple[int, int], mem64: tuple[int, int], *,
                    hotplug_region: tuple[int, int] | None = None, irqs: Sequence[int] = PCI_INTX_IRQS) -> list[Aml]:
    """pci_segments_aml of a machine with one segment."""
    return pci_segments_aml([(segment_id, mmconfig_base, mem32, mem64)], hotplug_region=hotplug_region, irqs=irqs)
