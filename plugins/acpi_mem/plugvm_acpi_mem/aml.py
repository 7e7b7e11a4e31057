"""The memory hotplug DSDT fragment, shaped as cloud-hypervisor's MemoryManager AML
(vmm/src/memory_manager.rs `impl Aml for MemoryManager`, MemoryMethods, MemorySlot;
shared/reference/cloud-hypervisor-notes.md §3c):

    Scope (\\_SB_) {
      Device (MHPC) {
        Name (_HID, EisaId ("PNP0A06"))
        Name (_UID, "Memory Hotplug Controller")
        Mutex (MLCK, 0)                 // a selection and the reads after it belong together
        Name (_CRS, ResourceTemplate () { QWordMemory (ResourceConsumer, ..., addr, addr + 0x17) })
        OperationRegion (MHPR, SystemMemory, addr, 0x18)
        Field (MHPR, DWordAcc, NoLock, Preserve) { MHBL, 32, MHBH, 32, MHLL, 32, MHLH, 32, MHPX, 32 }
        Field (MHPR, ByteAcc, NoLock, WriteAsZeros) { Offset (0x14), MEN_, 1, MINS, 1, MRMV, 1, MEJ0, 1 }
        Field (MHPR, DWordAcc, NoLock, Preserve) { MSEL, 32, MOEV, 32, MOSC, 32 }
        Method (MTFY, 2) { If (Arg0 == 0) { Notify (M000, Arg1) } ... }
        Method (MSCN, 0, Serialized)    // the GED's memory scan: notify inserted DIMMs, ack them
        Method (MSTA, 1, Serialized)    // _STA of DIMM Arg0: 0xF if enabled
        Name (MR64, ResourceTemplate () { QWordMemory (...) }), CreateQWordField (MR64, 14, MINQ) ...
        Method (MCRS, 1, Serialized)    // _CRS of DIMM Arg0: MR64 filled from the registers
        Device (M000) { Name (_HID, EisaId ("PNP0C80")), Name (_UID, 0), _STA, _CRS } ...
      }
    }

The status byte's field is WriteAsZeros, so writing MINS = 1 acks the insert without
also writing MEJ0. MCRS builds the 64-bit range with 64-bit AML integers (the DSDT is
revision 2) rather than cloud-hypervisor's 32-bit halves and carry.
"""

from __future__ import annotations

from plugvm.acpi.aml import Device, EisaId, Method, Name, QWordMemory, ResourceTemplate, Return, Scope
from plugvm.acpi.aml_address import Cacheability
from plugvm.acpi.aml_extra import (Acquire, Add, Arg, CreateQWordField, Field, FieldAccess, FieldUpdate, If,
                                   LEqual, LLess, Local, MethodCall, Mutex, Notify, OperationRegion, Or,
                                   RegionSpace, Release, ShiftLeft, Store, Subtract, While)
from plugvm.acpi.aml_names import name_string
from plugvm.acpi.errors import AcpiError

from plugvm_acpi_mem.registers import REGISTERS_SIZE, SLOTS

DEVICE_CHECK, EJECT_REQUEST = 1, 3            # Notify values (ACPI 6.5, 5.6.6)
DIMM_PRESENT = 0xF                            # _STA: present, enabled, shown, functioning
# Byte offsets of the minimum, maximum and length in a QWord address space descriptor (6.4.3.5.1).
QWORD_MIN, QWORD_MAX, QWORD_LENGTH = 14, 22, 38


def dimm_name(slot: int) -> str:
    """cloud-hypervisor's name for DIMM slot `slot`: M000, M001, ... (decimal)."""
    return f"M{slot:03d}"


def _locked(*body):
    return [Acquire("MLCK"), *body, Release("MLCK")]


def _on_status(bit: str, event: int) -> If:
    return If(LEqual(bit, 1), MethodCall("MTFY", Local(0), event), Store(1, bit))


def range_template() -> list:
    """MR64, the QWord memory range MCRS fills in and returns, with its fields. A global
    of the controller rather than a Name in MCRS (ACPICA: "creation of named objects
    within a method is highly inefficient"); MCRS is serialized and holds MLCK."""
    return [Name("MR64", ResourceTemplate(QWordMemory(0, 0, producer=False, cacheability=Cacheability.CACHEABLE))),
            CreateQWordField("MR64", QWORD_MIN, "MINQ"),
            CreateQWordField("MR64", QWORD_MAX, "MAXQ"),
            CreateQWordField("MR64", QWORD_LENGTH, "LENQ")]


def memory_methods(slots: int) -> list[Method]:
    """MTFY, MSCN, MSTA and MCRS, before the devices that call them."""
    notifies = [If(LEqual(Arg(0), slot), Notify(dimm_name(slot), Arg(1))) for slot in range(slots)]
    return [
        Method("MTFY", 2, *notifies),
        Method("MSCN", 0,
               *_locked(Store(0, Local(0)),
                        While(LLess(Local(0), slots),
                              Store(Local(0), "MSEL"),
                              _on_status("MINS", DEVICE_CHECK),
                              _on_status("MRMV", EJECT_REQUEST),
                              Add(Local(0), 1, Local(0)))),
               serialized=True),
        Method("MSTA", 1,
               *_locked(Store(0, Local(0)),
                        Store(Arg(0), "MSEL"),
                        If(LEqual("MEN_", 1), Store(DIMM_PRESENT, Local(0)))),
               Return(Local(0)),
               serialized=True),
        Method("MCRS", 1,
               *_locked(Store(Arg(0), "MSEL"),
                        Or(ShiftLeft("MHBH", 32), "MHBL", "MINQ"),
                        Or(ShiftLeft("MHLH", 32), "MHLL", "LENQ"),
                        Subtract(Add("MINQ", "LENQ"), 1, "MAXQ")),
               Return(name_string("MR64")),       # a name here, not the String "MR64"
               serialized=True),
    ]


def dimm_device(slot: int) -> Device:
    return Device(dimm_name(slot),
                  Name("_HID", EisaId("PNP0C80")),
                  Name("_UID", slot),
                  Method("_STA", 0, Return(MethodCall("MSTA", slot))),
                  Method("_CRS", 0, Return(MethodCall("MCRS", slot))))


def memory_hotplug_aml(register_addr: int, slots: int = SLOTS) -> list:
    """[Scope(\\_SB_, MHPC)]: the controller's registers, its methods and one PNP0C80 device
    per DIMM slot. \\_SB_.MHPC.MSCN is what ged_aml(..., memory=True) calls."""
    if not 0 <= register_addr <= (1 << 64) - REGISTERS_SIZE:
        raise AcpiError(f"memory hotplug register address {register_addr:#x} is not a 64-bit guest physical address")
    if not 1 <= slots <= 1000:
        raise AcpiError(f"memory hotplug: {slots} slots is not 1..1000 (device names M000..M999)")
    last = register_addr + REGISTERS_SIZE - 1
    controller = Device(
        "MHPC",
        Name("_HID", EisaId("PNP0A06")),
        Name("_UID", "Memory Hotplug Controller"),
        Mutex("MLCK", 0),
        Name("_CRS", ResourceTemplate(QWordMemory(register_addr, last, producer=False))),
        OperationRegion("MHPR", RegionSpace.SYSTEM_MEMORY, register_addr, REGISTERS_SIZE),
        Field("MHPR", [("MHBL", 32), ("MHBH", 32), ("MHLL", 32), ("MHLH", 32), ("MHPX", 32)],
              access=FieldAccess.DWORD),
        Field("MHPR", [(None, 0x14 * 8), ("MEN_", 1), ("MINS", 1), ("MRMV", 1), ("MEJ0", 1)],
              access=FieldAccess.BYTE, update=FieldUpdate.WRITE_AS_ZEROS),
        Field("MHPR", [("MSEL", 32), ("MOEV", 32), ("MOSC", 32)], access=FieldAccess.DWORD),
        *range_template(),
        *memory_methods(slots),
        *[dimm_device(slot) for slot in range(slots)])
    return [Scope("\\_SB_", controller)]
