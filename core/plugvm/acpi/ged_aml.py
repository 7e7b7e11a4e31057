"""The GED's DSDT fragment, as cloud-hypervisor's `impl Aml for AcpiGedDevice`
(devices/src/acpi.rs; shared/reference/cloud-hypervisor-notes.md §3a):

    Scope (\\_SB_) {
        Device (GEC_) {                 // the register, and the method that decodes it
            Name (_HID, EisaId ("PNP0A06"))
            Name (_UID, "Generic Event Controller")
            Name (_CRS, ResourceTemplate () { QWordMemory (ResourceConsumer, ..., addr, addr, 0, 1) })
            OperationRegion (GDST, SystemMemory, addr, 1)
            Field (GDST, ByteAcc, NoLock, WriteAsZeros) { GDAT, 8 }
            Method (ESCN, 0, Serialized) {
                Local0 = GDAT           // read-to-clear
                Local1 = Local0 & 1;  If (Local1 == 1) { \\_SB_.CPUS.CSCN () }   // only if cpus
                ...                                                            // memory, pci
                Local1 = Local0 & 8;  If (Local1 == 8) { Notify (\\_SB_.PWRB, 0x80) }
            }
        }
        Device (GED_) {                 // ACPI 6.5, 5.6.9 Interrupt-signaled ACPI events
            Name (_HID, "ACPI0013")
            Name (_UID, 0)
            Name (_CRS, ResourceTemplate () { Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) {irq} })
            Method (_EVT, 1, Serialized) { \\_SB_.GEC_.ESCN () }
        }
    }

\\_SB_.PWRB itself comes from platform_aml.power_button(), which every DSDT has.
"""

from __future__ import annotations

from plugvm.acpi.aml import Aml, Device, EisaId, Interrupt, Method, Name, QWordMemory, ResourceTemplate, Scope
from plugvm.acpi.aml_extra import (And, Field, FieldAccess, FieldUpdate, If, LEqual, Local, MethodCall, Notify,
                                   OperationRegion, RegionSpace, Store)
from plugvm.acpi.errors import AcpiError

GED_SIZE = 1                      # the register (devices/ged.py)
NOTIFY_STATUS_CHANGE = 0x80       # for a power button: "pressed" (4.8.2.2.1.2, 5.6.6)
# The register's bits (devices/ged.py), which ESCN tests in this order.
_CPU, _MEMORY, _PCI, _POWER = 0x1, 0x2, 0x4, 0x8


def _on_bit(bit: int, *action: Aml) -> list[Aml]:
    return [And(Local(0), bit, Local(1)), If(LEqual(Local(1), bit), *action)]


def event_controller(register_addr: int, *, cpus: bool = False, memory: bool = False, pci: bool = False) -> Device:
    """Device GEC_: the register's OpRegion and ESCN, which reads it (clearing it) and
    runs the scan of each component whose bit is set. A scan is called only when its
    component is in the DSDT (the flags), or the call would fail to resolve."""
    scans = [(_CPU, cpus, "\\_SB_.CPUS.CSCN"), (_MEMORY, memory, "\\_SB_.MHPC.MSCN"), (_PCI, pci, "\\_SB_.PHPR.PSCN")]
    body: list[Aml] = [Store("GDAT", Local(0))]
    for bit, present, scan in scans:
        if present:
            body += _on_bit(bit, MethodCall(scan))
    body += _on_bit(_POWER, Notify("\\_SB_.PWRB", NOTIFY_STATUS_CHANGE))
    last = register_addr + GED_SIZE - 1
    return Device("GEC_",
                  Name("_HID", EisaId("PNP0A06")),
                  Name("_UID", "Generic Event Controller"),
                  Name("_CRS", ResourceTemplate(QWordMemory(register_addr, last, producer=False))),
                  OperationRegion("GDST", RegionSpace.SYSTEM_MEMORY, register_addr, GED_SIZE),
                  Field("GDST", [("GDAT", 8)], access=FieldAccess.BYTE, update=FieldUpdate.WRITE_AS_ZEROS),
                  Method("ESCN", 0, *body, serialized=True))


def event_device(irq: int) -> Device:
    """Device GED_: the interrupt, edge-triggered and active-high (the VMM pulses it),
    and _EVT, which the OS runs for it with the GSI as Arg0."""
    return Device("GED_",
                  Name("_HID", "ACPI0013"),
                  Name("_UID", 0),
                  Name("_CRS", ResourceTemplate(Interrupt(irq, consumer=True, edge=True, active_low=False,
                                                          shared=False))),
                  Method("_EVT", 1, MethodCall("\\_SB_.GEC_.ESCN"), serialized=True))


def ged_aml(register_addr: int, irq: int, *, cpus: bool = False, memory: bool = False,
            pci: bool = False) -> list[Aml]:
    """The GED's DSDT fragment: GEC_ and GED_ in \\_SB_. register_addr is the guest
    physical address of the 1-byte register, irq its GSI; cpus, memory and pci say
    whether \\_SB_.CPUS.CSCN, \\_SB_.MHPC.MSCN and \\_SB_.PHPR.PSCN are in the DSDT.
    Power-button events (bit 3) are always handled: \\_SB_.PWRB is always there."""
    if not 0 <= register_addr <= (1 << 64) - GED_SIZE:
        raise AcpiError(f"GED register address {register_addr:#x} is not a 64-bit guest physical address")
    return [Scope("\\_SB_", event_controller(register_addr, cpus=cpus, memory=memory, pci=pci), event_device(irq))]
