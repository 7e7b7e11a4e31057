"""The CPU hotplug DSDT fragment, shaped as cloud-hypervisor's `impl Aml for CpuManager`,
`CpuMethods`, `CpuNotify` and `Cpu` (vmm/src/cpu.rs; shared/reference/cloud-hypervisor-notes.md §3b):

    Scope (\\_SB_) {
        Device (PRES) {                 // the controller's registers
            Name (_HID, EisaId ("PNP0A06"))
            Name (_UID, "CPU Hotplug Controller")
            Mutex (CPLK, 0)             // a selection and the status read after it belong together
            Name (_CRS, ResourceTemplate () { QWordMemory (ResourceConsumer, ..., addr, addr + 11, 0, 12) })
            OperationRegion (PRST, SystemMemory, addr, 12)
            Field (PRST, ByteAcc, NoLock, WriteAsZeros) {
                Offset (4), CPEN, 1, CINS, 1, CRMV, 1, CEJ0, 1, , 4, CCMD, 8 }
            Field (PRST, DWordAcc, NoLock, Preserve) { CSEL, 32, , 32, CDAT, 32 }
        }
        Device (CPUS) {                 // ACPI0010: a Processor Container Device (ACPI 6.5, 8.4)
            Name (_HID, "ACPI0010")
            Name (_CID, EisaId ("PNP0A05"))
            Method (CSTA, 1, Serialized)    // _STA of CPU Arg0: 0xF if enabled, else 0
            Method (CTFY, 2, Serialized)    // Notify (C<Arg0>, Arg1)
            Method (CEJ0, 1, Serialized)    // eject CPU Arg0
            Method (CSCN, 0, Serialized)    // the GED's CPU scan: notify inserted and removing CPUs
            Device (C000) { _HID "ACPI0007", _UID 0, _STA, _PXM, _MAT, _EJ0 }
            ...
        }
    }

The status byte's field is WriteAsZeros so that writing one bit writes only that bit:
CINS = 1 acknowledges an insertion without also writing back CRMV or CEJ0. Unlike
cloud-hypervisor's: the window in _CRS is a DWordMemory below 4 GiB (as PHPR's) and a
ResourceConsumer, the registers being the device's own (6.4.3.5; GEC_ does the same);
_MAT is the MADT's own structure for the CPU (a Local APIC below APIC id 255), not
always a Local x2APIC; and max_vcpus stops at 0x1000, where the names run out.
"""

from __future__ import annotations

from typing import Callable

from plugvm.acpi.aml import (Aml, Buffer, Device, DWordMemory, EisaId, Method, Name, QWordMemory, ResourceTemplate,
                             Return, Scope)
from plugvm.acpi.aml_extra import (Acquire, Add, Arg, Field, FieldAccess, FieldUpdate, If, LEqual, LLess, Local,
                                   MethodCall, Mutex, Notify, OperationRegion, RegionSpace, Release, Store, While)
from plugvm.acpi.errors import AcpiError

CPU_HOTPLUG_SIZE = 0xC            # selector (DWord at 0), status (byte at 4), command/data (unused)
MAX_CPUS = 0x1000                 # device names C000..CFFF: three hex digits
DEVICE_CHECK, EJECT_REQUEST = 1, 3                    # Notify values (5.6.6)
CPU_PRESENT = 0xF                 # _STA: present, enabled, shown, functioning (6.3.7)
PROXIMITY_DOMAIN = 0              # one NUMA node, as cloud-hypervisor without --numa
PRES = "\\_SB_.PRES"


def cpu_device_name(cpu: int) -> str:
    """cloud-hypervisor's name for CPU `cpu`'s device: C000, C001, ... C00A, ... CFFF."""
    return f"C{cpu:03X}"


def hotplug_controller(register_addr: int) -> Device:
    """Device PRES: the registers as fields, and the mutex that keeps a selection (CSEL)
    and the status read or written after it together."""
    last = register_addr + CPU_HOTPLUG_SIZE - 1
    window = (DWordMemory if last < 1 << 32 else QWordMemory)(register_addr, last, producer=False)
    return Device("PRES",
                  Name("_HID", EisaId("PNP0A06")),
                  Name("_UID", "CPU Hotplug Controller"),
                  Mutex("CPLK", 0),
                  Name("_CRS", ResourceTemplate(window)),
                  OperationRegion("PRST", RegionSpace.SYSTEM_MEMORY, register_addr, CPU_HOTPLUG_SIZE),
                  Field("PRST", [(None, 32), ("CPEN", 1), ("CINS", 1), ("CRMV", 1), ("CEJ0", 1), (None, 4),
                                 ("CCMD", 8)],
                        access=FieldAccess.BYTE, update=FieldUpdate.WRITE_AS_ZEROS),
                  Field("PRST", [("CSEL", 32), (None, 32), ("CDAT", 32)], access=FieldAccess.DWORD))


def _locked(*body: Aml) -> list[Aml]:
    return [Acquire(f"{PRES}.CPLK"), *body, Release(f"{PRES}.CPLK")]


def _on_status(bit: str, event: int) -> If:
    """If the selected CPU's bit is set, notify its device and write the bit back to
    acknowledge it (the VMM clears it)."""
    return If(LEqual(f"{PRES}.{bit}", 1), MethodCall("CTFY", Local(0), event), Store(1, f"{PRES}.{bit}"))


def cpu_methods(max_vcpus: int) -> list[Method]:
    """CSTA, CTFY, CEJ0 and CSCN, in that order: a method must come before its callers
    in the table (CSCN calls CTFY; the devices call CSTA and CEJ0)."""
    notifies = [If(LEqual(Arg(0), cpu), Notify(cpu_device_name(cpu), Arg(1))) for cpu in range(max_vcpus)]
    return [Method("CSTA", 1,
                   *_locked(Store(Arg(0), f"{PRES}.CSEL"),
                            Store(0, Local(0)),
                            If(LEqual(f"{PRES}.CPEN", 1), Store(CPU_PRESENT, Local(0)))),
                   Return(Local(0)),
                   serialized=True),
            Method("CTFY", 2, *notifies, serialized=True),
            Method("CEJ0", 1, *_locked(Store(Arg(0), f"{PRES}.CSEL"), Store(1, f"{PRES}.CEJ0")), serialized=True),
            Method("CSCN", 0,
                   *_locked(Store(0, Local(0)),
                            While(LLess(Local(0), max_vcpus),
                                  Store(Local(0), f"{PRES}.CSEL"),
                                  _on_status("CINS", DEVICE_CHECK),
                                  _on_status("CRMV", EJECT_REQUEST),
                                  Add(Local(0), 1, Local(0)))),
                   serialized=True)]


def processor_device(cpu: int, mat: bytes) -> Device:
    """Device C<cpu>: a processor (8.4) whose _UID is its MADT ACPI Processor UID, its
    _STA and _EJ0 asking the controller, and _MAT its MADT structure, Enabled (Linux
    reads a hot-added CPU's APIC id from it). CPU 0 has an _EJ0 too, as in
    cloud-hypervisor; the VMM ignores an eject of CPU 0."""
    return Device(cpu_device_name(cpu),
                  Name("_HID", "ACPI0007"),
                  Name("_UID", cpu),
                  Method("_STA", 0, Return(MethodCall("CSTA", cpu))),
                  Method("_PXM", 0, Return(PROXIMITY_DOMAIN)),
                  Name("_MAT", Buffer(mat)),
                  Method("_EJ0", 1, MethodCall("CEJ0", cpu)))


def cpu_hotplug_aml(register_addr: int, max_vcpus: int, mat: Callable[[int], bytes]) -> list[Aml]:
    """[Scope(\\_SB_, PRES, CPUS)]: the CPU hotplug controller's registers and methods, and
    one processor device per possible CPU. register_addr is the guest physical address of
    the 12-byte register block; mat(i) the bytes of CPU i's _MAT (a MADT processor
    structure, Enabled). \\_SB_.CPUS.CSCN is what ged_aml(..., cpus=True) calls."""
    if not 0 <= register_addr <= (1 << 64) - CPU_HOTPLUG_SIZE:
        raise AcpiError(f"CPU hotplug register address {register_addr:#x} is not a 64-bit guest physical address")
    if not 1 <= max_vcpus <= MAX_CPUS:
        raise AcpiError(f"CPU hotplug: max_vcpus={max_vcpus} is not 1..{MAX_CPUS} (device names C000..CFFF)")
    cpus = Device("CPUS",
                  Name("_HID", "ACPI0010"),
                  Name("_CID", EisaId("PNP0A05")),
                  *cpu_methods(max_vcpus),
                  *[processor_device(cpu, mat(cpu)) for cpu in range(max_vcpus)])
    return [Scope("\\_SB_", hotplug_controller(register_addr), cpus)]
