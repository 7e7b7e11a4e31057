"""The CPU hotplug DSDT fragment (plugvm.acpi.cpu_aml): golden bytes for a processor
device and the controller's registers (the ASL beside them), the whole fragment against
what iasl compiles from its ASL, and ACPICA over whole tables with it, the GED and the
MADT: iasl disassembles and recompiles them cleanly, and acpiexec loads them, reads
_MAT and _STA, runs the scan (through the GED) and a CPU's _EJ0.

acpiexec simulates the register block as plain memory: the selector does not pick a
CPU's status, so a status bit set before a scan is seen for every CPU, and an
acknowledgement leaves the bit it wrote. The tests say what that implies where they
rely on it."""

import re
import struct
from collections import Counter

import pytest

from plugvm.acpi import AcpiError, AcpiPlatform, build
from plugvm.acpi.aml import Method, Return
from plugvm.acpi.aml_extra import Arg, Field, FieldAccess, MethodCall, Store
from plugvm.acpi.cpu_aml import (CPU_HOTPLUG_SIZE, cpu_device_name, cpu_hotplug_aml, hotplug_controller,
                                 processor_device)
from plugvm.acpi.ged_aml import ged_aml
from plugvm.acpi.madt import processor_entry
from plugvm.acpi.madt_entries import ENABLED
from plugvm.layout import platform_devices
from plugvm.testing.acpica import CLEAN_COMPILE, check_round_trip, problems, run, run_over_tables, tool

PLATFORM = platform_devices(40)                 # the 1 TiB guest's platform area, as machine.py lays it out
CPU_REGS, GED_REG, GED_IRQ = PLATFORM["cpu_hotplug"], PLATFORM["ged"], 13


def mat(max_vcpus):
    """_MAT as the machine builds it: the MADT's own structure, Enabled."""
    return lambda cpu: processor_entry(cpu, boot_cpus=max_vcpus).to_bytes()


def asl_bytes(data: bytes) -> str:
    return ", ".join(f"0x{b:02X}" for b in data)


def compile_asl(asl: str, directory) -> bytes:
    """The AML iasl compiles from asl (in an SSDT), after the table header."""
    (directory / "golden.asl").write_text(f'DefinitionBlock ("", "SSDT", 2, "CLOUDH", "GOLDEN", 1)\n{{\n{asl}\n}}\n')
    # -on: keep name paths as written (iasl would shorten \_SB_.PRES.CSEL inside \_SB_)
    rc, output = run(tool("iasl"), "-on", "-p", "golden", "golden.asl", cwd=directory)
    assert rc == 0 and CLEAN_COMPILE.search(output), output
    return (directory / "golden.aml").read_bytes()[36:]


# --- Golden bytes: (ASL, objects, hex). iasl compiles each ASL to the same bytes.

STUBS_ASL = ("Method (CSTA, 1, NotSerialized) { Return (Arg0) }\n"       # what a device calls, declared first
             "Method (CEJ0, 1, NotSerialized) { Return (Arg0) }\n")
STUBS = (Method("CSTA", 1, Return(Arg(0))), Method("CEJ0", 1, Return(Arg(0))))
STUBS_HEX = "14 08 43535441 01 A4 68  14 08 43454A30 01 A4 68 "


def device_asl(cpu, uid, mat_bytes):
    return (f'Device ({cpu_device_name(cpu)}) {{\n'
            f'    Name (_HID, "ACPI0007")\n'
            f'    Name (_UID, {uid})\n'
            f'    Method (_STA, 0, NotSerialized) {{ Return (CSTA ({uid})) }}\n'
            f'    Method (_PXM, 0, NotSerialized) {{ Return (Zero) }}\n'
            f'    Name (_MAT, Buffer () {{ {asl_bytes(mat_bytes)} }})\n'
            f'    Method (_EJ0, 1, NotSerialized) {{ CEJ0 ({uid}) }}\n'
            f'}}\n')


def controller_asl(addr, memory="QWordMemory"):
    return (f'Device (PRES) {{\n'
            f'    Name (_HID, EisaId ("PNP0A06"))\n'
            f'    Name (_UID, "CPU Hotplug Controller")\n'
            f'    Mutex (CPLK, 0x00)\n'
            f'    Name (_CRS, ResourceTemplate () {{\n'
            f'        {memory} (ResourceConsumer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,\n'
            f'                  0x0, {addr:#X}, {addr + 11:#X}, 0x0, 0xC) }})\n'
            f'    OperationRegion (PRST, SystemMemory, {addr:#X}, 0x0C)\n'
            f'    Field (PRST, ByteAcc, NoLock, WriteAsZeros) {{\n'
            f'        Offset (0x04), CPEN, 1, CINS, 1, CRMV, 1, CEJ0, 1, , 4, CCMD, 8 }}\n'
            f'    Field (PRST, DWordAcc, NoLock, Preserve) {{ CSEL, 32, Offset (0x08), CDAT, 32 }}\n'
            f'}}\n').replace("0X", "0x")


GOLDEN = {
    "processor-xapic": (
        STUBS_ASL + device_asl(10, "0x0A", processor_entry(10, 11).to_bytes()),
        (*STUBS, processor_device(10, processor_entry(10, 11).to_bytes())),
        STUBS_HEX + "5B82 4105 4330 3041"                           # Device (C00A), PkgLength 0x51
        " 08 5F484944 0D 4143504930303037 00"                       # _HID "ACPI0007"
        " 08 5F554944 0A0A"                                         # _UID 0x0A
        " 14 0D 5F535441 00 A4 43535441 0A0A"                       # _STA: Return (CSTA (0x0A))
        " 14 08 5F50584D 00 A4 00"                                  # _PXM: Return (Zero)
        " 08 5F4D4154 11 0B 0A08 00 08 0A 0A 01000000"              # _MAT: Local APIC (type 0, length 8,
                                                                    # UID 10, APIC id 10), Enabled
        " 14 0C 5F454A30 01 43454A30 0A0A"),                        # _EJ0 (1 argument): CEJ0 (0x0A)
    "processor-x2apic": (
        STUBS_ASL + device_asl(300, "0x012C", processor_entry(300, 301).to_bytes()),
        (*STUBS, processor_device(300, processor_entry(300, 301).to_bytes())),
        STUBS_HEX + "5B82 4C05 43313243"                            # Device (C12C)
        " 08 5F484944 0D 4143504930303037 00"
        " 08 5F554944 0B2C01"
        " 14 0E 5F535441 00 A4 43535441 0B2C01"
        " 14 08 5F50584D 00 A4 00"
        " 08 5F4D4154 11 13 0A10 09 10 0000 2C010000 01000000 2C010000"   # Local x2APIC (type 9, 16 bytes):
                                                                          # x2APIC id, Enabled, UID
        " 14 0D 5F454A30 01 43454A30 0B2C01"),
    "controller-64bit": (
        controller_asl(0xFFFF_EF00_1000),
        (hotplug_controller(0xFFFF_EF00_1000),),
        "5B82 480B 50524553"                                        # Device (PRES)
        " 08 5F484944 0C 41D00A06"                                  # _HID EisaId ("PNP0A06")
        " 08 5F554944 0D 43505520486F74706C756720436F6E74726F6C6C6572 00"
        " 5B01 43504C4B 00"                                         # Mutex (CPLK, 0)
        " 08 5F435253 11 33 0A30 8A 2B00 00 0D 01"                  # QWordMemory: memory, consumer|MinFixed|
        " 0000000000000000 001000EFFFFF0000 0B1000EFFFFF0000"       # MaxFixed, ReadWrite; min, max,
        " 0000000000000000 0C00000000000000 7900"                   # translation, length 12; EndTag
        " 5B80 50525354 00 0E 001000EFFFFF0000 0A0C"                # OperationRegion (PRST, SystemMemory, addr, 12)
        " 5B81 23 50525354 41"                                      # Field: ByteAcc | WriteAsZeros << 5
        " 00 20 4350454E 01 43494E53 01 43524D56 01 43454A30 01"    # 32 reserved, CPEN, CINS, CRMV, CEJ0
        " 00 04 43434D44 08"                                        # 4 reserved, CCMD
        " 5B81 12 50525354 03 4353454C 20 00 20 43444154 20"),      # DWordAcc, Preserve: CSEL, 32 reserved, CDAT
    "controller-32bit": (
        controller_asl(0xFEB0_1000, "DWordMemory"),
        (hotplug_controller(0xFEB0_1000),),
        "5B82 400A 50524553"
        " 08 5F484944 0C 41D00A06"
        " 08 5F554944 0D 43505520486F74706C756720436F6E74726F6C6C6572 00"
        " 5B01 43504C4B 00"
        " 08 5F435253 11 1F 0A1C 87 1700 00 0D 01 00000000 0010B0FE 0B10B0FE 00000000 0C000000 7900"
        " 5B80 50525354 00 0C 0010B0FE 0A0C"
        " 5B81 23 50525354 41 00 20 4350454E 01 43494E53 01 43524D56 01 43454A30 01 00 04 43434D44 08"
        " 5B81 12 50525354 03 4353454C 20 00 20 43444154 20"),
}


@pytest.mark.parametrize("asl, objects, hex_bytes", GOLDEN.values(), ids=GOLDEN.keys())
def test_golden_bytes(asl, objects, hex_bytes):
    assert b"".join(o.to_bytes() for o in objects).hex(" ") == bytes.fromhex(hex_bytes).hex(" ")


@pytest.mark.parametrize("asl, objects, hex_bytes", GOLDEN.values(), ids=GOLDEN.keys())
def test_iasl_compiles_the_golden_asl_to_the_same_bytes(asl, objects, hex_bytes, tmp_path):
    assert compile_asl(asl, tmp_path).hex(" ") == bytes.fromhex(hex_bytes).hex(" ")


# --- The whole fragment against the ASL it stands for

def fragment_asl(addr, max_vcpus):
    """cpu_hotplug_aml's fragment, written in ASL as cloud-hypervisor's CpuManager builds it."""
    pres = "\\_SB_.PRES"
    notifies = "\n".join(f"        If ((Arg0 == {cpu:#04x})) {{ Notify ({cpu_device_name(cpu)}, Arg1) }}"
                         for cpu in range(max_vcpus))
    devices = "".join(device_asl(cpu, f"{cpu:#06x}", mat(max_vcpus)(cpu)) for cpu in range(max_vcpus))
    return f"""Scope (\\_SB_) {{
{controller_asl(addr)}
Device (CPUS) {{
    Name (_HID, "ACPI0010")
    Name (_CID, EisaId ("PNP0A05"))
    Method (CSTA, 1, Serialized) {{
        Acquire ({pres}.CPLK, 0xFFFF)
        {pres}.CSEL = Arg0
        Local0 = Zero
        If (({pres}.CPEN == One)) {{ Local0 = 0x0F }}
        Release ({pres}.CPLK)
        Return (Local0)
    }}
    Method (CTFY, 2, Serialized) {{
{notifies}
    }}
    Method (CEJ0, 1, Serialized) {{
        Acquire ({pres}.CPLK, 0xFFFF)
        {pres}.CSEL = Arg0
        {pres}.CEJ0 = One
        Release ({pres}.CPLK)
    }}
    Method (CSCN, 0, Serialized) {{
        Acquire ({pres}.CPLK, 0xFFFF)
        Local0 = Zero
        While ((Local0 < {max_vcpus:#x})) {{
            {pres}.CSEL = Local0
            If (({pres}.CINS == One)) {{ CTFY (Local0, One) {pres}.CINS = One }}
            If (({pres}.CRMV == One)) {{ CTFY (Local0, 0x03) {pres}.CRMV = One }}
            Add (Local0, One, Local0)
        }}
        Release ({pres}.CPLK)
    }}
{devices}
}}
}}"""


@pytest.mark.parametrize("max_vcpus", [1, 2, 12])
def test_iasl_compiles_the_fragments_asl_to_the_same_bytes(max_vcpus, tmp_path):
    ours = b"".join(o.to_bytes() for o in cpu_hotplug_aml(CPU_REGS, max_vcpus, mat(max_vcpus)))
    assert compile_asl(fragment_asl(CPU_REGS, max_vcpus), tmp_path).hex(" ") == ours.hex(" ")


def test_device_names_are_three_hex_digits():
    assert [cpu_device_name(c) for c in (0, 9, 10, 11, 255, 0xFFF)] == ["C000", "C009", "C00A", "C00B", "C0FF",
                                                                        "CFFF"]
    aml = b"".join(o.to_bytes() for o in cpu_hotplug_aml(CPU_REGS, 12, mat(12)))
    assert all(cpu_device_name(c).encode() in aml for c in range(12)) and b"C00C" not in aml


def test_mat_is_the_madts_structure_with_enabled_set():
    """The MADT lists every possible CPU, Enabled only for boot CPUs; each device's _MAT
    is that CPU's structure with Enabled set, and its _UID the structure's UID."""
    boot, maximum = 2, 300
    madt = build(AcpiPlatform(boot_cpus=boot, max_cpus=maximum)).tables["APIC"]
    offset, entries = 44, []
    while offset < len(madt):
        length = madt[offset + 1]
        entries.append(madt[offset:offset + length])
        offset += length
    for cpu in range(maximum):
        entry, ours = entries[cpu], mat(maximum)(cpu)
        flags_at = 4 if entry[0] == 0 else 8          # Local APIC / Local x2APIC (5.2.12.2, 5.2.12.12)
        assert struct.unpack_from("<I", entry, flags_at)[0] & ENABLED == (cpu < boot)
        assert ours == entry[:flags_at] + struct.pack("<I", ENABLED) + entry[flags_at + 4:], cpu
        assert processor_device(cpu, ours).to_bytes().count(ours) == 1


@pytest.mark.parametrize("args", [(-1, 4), ((1 << 64) - CPU_HOTPLUG_SIZE + 1, 4), (CPU_REGS, 0),
                                  (CPU_REGS, 0x1001)])
def test_bad_arguments_are_refused(args):
    with pytest.raises(AcpiError):
        cpu_hotplug_aml(*args, mat(4))


# --- ACPICA over the whole tables

# max_vcpus, and whether the GED's fragment comes before the CPUs' (machine.py may place it
# either way: ESCN's call of \_SB_.CPUS.CSCN is then a forward reference).
VARIANTS = {"4": (4, False), "12-ged-first": (12, True), "256": (256, False)}


def tables(variant):
    max_vcpus, ged_first = VARIANTS[variant]
    cpus = cpu_hotplug_aml(CPU_REGS, max_vcpus, mat(max_vcpus))
    ged = ged_aml(GED_REG, GED_IRQ, cpus=True)
    # The test's hands on the registers: TSTS is the whole status byte (Preserve, so
    # TSET writes exactly the byte given); TGED plays the VMM's GED(CPU) and the OS's _EVT.
    helpers = [Field("\\_SB_.PRES.PRST", [(None, 32), ("TSTS", 8)], access=FieldAccess.BYTE),
               Method("\\TSET", 1, Store(Arg(0), "\\TSTS")),
               Method("\\TGED", 0, Store(1, "\\_SB_.GEC_.GDAT"), MethodCall("\\_SB_.GED_._EVT", GED_IRQ))]
    fragments = (*ged, *cpus) if ged_first else (*cpus, *ged)
    image = build(AcpiPlatform(boot_cpus=2, max_cpus=max_vcpus, dsdt_fragments=(*fragments, *helpers)))
    return {sig: t for sig, t in image.tables.items() if sig != "RSDP"}


def commands(max_vcpus):
    last = cpu_device_name(max_vcpus - 1)
    steps = ["Paths", "Predefined", "Resources",
             r"Evaluate \_SB_.CPUS.C001._MAT", rf"Evaluate \_SB_.CPUS.{last}._MAT",
             r"Evaluate \_SB_.CPUS.C001._STA",                    # nothing enabled: 0
             r"Evaluate \TSET 1", r"Evaluate \_SB_.CPUS.C001._STA", r"Evaluate \_SB_.PRES.CSEL",   # CPEN: 0xF
             r"Evaluate \TSET 0", r"Evaluate \_SB_.CPUS.CSCN",     # nothing inserted or removing: no Notify
             r"Evaluate \TSET 3", r"Evaluate \TGED",               # CPEN|CINS: Device Check, through the GED
             r"Evaluate \TSTS", r"Evaluate \_SB_.PRES.CSEL",
             r"Evaluate \TSET 4", r"Evaluate \_SB_.CPUS.CSCN",     # CRMV: Eject Request
             r"Evaluate \_SB_.CPUS.CTFY 1 1",                      # one CPU's Notify, by itself
             r"Evaluate \TSET 1", r"Evaluate \_SB_.CPUS.C002._EJ0 1", r"Evaluate \_SB_.PRES.CSEL",   # CPEN
             r"Evaluate \TSTS"]
    return ";".join(steps)


@pytest.fixture(scope="module", params=VARIANTS)
def acpica(request, tmp_path_factory):
    """(variant, directory, {step: (rc, output)}) after iasl and acpiexec ran over its tables."""
    variant, directory, steps = request.param, tmp_path_factory.mktemp(f"cpu-{request.param}"), {}
    steps = run_over_tables(tables(variant), directory, commands(VARIANTS[variant][0]).split(";"))
    return variant, directory, steps


def test_iasl_disassembles_every_table_and_recompiles_the_dsdt(acpica):
    variant, directory, steps = acpica
    check_round_trip(tables(variant), directory, steps)


def integers(output, path):
    """The values of every evaluation of path, in order."""
    found = re.findall(rf"Evaluation of {re.escape(path)} returned.*\n\s*\[Integer\] = (\w+)", output)
    return [int(v, 16) for v in found]


def buffer(output, path):
    match = re.search(rf"Evaluation of {re.escape(path)} returned.*\n\s*\[Buffer\] Length (\w+) =\s+0000: "
                      r"((?:[0-9A-F]{2} )+)", output)
    assert match, output
    data = bytes.fromhex(match[2])
    assert len(data) == int(match[1], 16)
    return data


def test_acpiexec_loads_the_fragment_and_reads_each_cpus_objects(acpica):
    variant, _, steps = acpica
    max_vcpus = VARIANTS[variant][0]
    rc, output = steps["acpiexec"]
    assert rc == 0 and not problems(output), output
    assert "ACPI: 1 ACPI AML tables successfully acquired and loaded" in output
    paths = set(re.findall(r"^\s*\d+\s+(\w+)\s+(\S+)\s*$", output, re.M))
    expected = {("Device", "_SB.PRES"), ("Mutex", "_SB.PRES.CPLK"), ("Region", "_SB.PRES.PRST"),
                ("Device", "_SB.CPUS"), *[("Method", f"_SB.CPUS.{m}") for m in ("CSTA", "CTFY", "CEJ0", "CSCN")]}
    for cpu in range(max_vcpus):
        expected |= {("Device", f"_SB.CPUS.{cpu_device_name(cpu)}"),
                     *[("Method", f"_SB.CPUS.{cpu_device_name(cpu)}.{m}") for m in ("_STA", "_PXM", "_EJ0")]}
    assert expected <= paths, sorted(expected - paths)
    assert ("Device", f"_SB.CPUS.{cpu_device_name(max_vcpus)}") not in paths
    # _MAT: the MADT structure, 8 bytes (Local APIC) below APIC id 255, 16 (x2APIC) from it
    last = max_vcpus - 1
    assert buffer(output, r"\_SB_.CPUS.C001._MAT") == mat(max_vcpus)(1) and len(mat(max_vcpus)(1)) == 8
    assert buffer(output, rf"\_SB_.CPUS.{cpu_device_name(last)}._MAT") == mat(max_vcpus)(last)
    assert len(mat(max_vcpus)(last)) == (16 if last >= 255 else 8)
    # the register window, as ACPICA's resource manager decodes PRES's _CRS
    assert re.search(rf"Address Minimum : {CPU_REGS:016X}\s+Address Maximum : {CPU_REGS + 11:016X}", output), output
    # _STA selects the CPU and reads CPEN
    assert integers(output, r"\_SB_.CPUS.C001._STA") == [0, 0xF]


def test_acpiexec_runs_the_scan_through_the_ged_and_a_cpus_eject(acpica):
    variant, _, steps = acpica
    max_vcpus = VARIANTS[variant][0]
    rc, output = steps["acpiexec"]
    assert rc == 0 and not problems(output), output
    notifies = Counter(re.findall(r"Received a System Notify on \[(\w+)\] \w+ Value 0x(\w+)", output))
    # The scans: with CINS, each CPU once with Device Check (the register being plain memory,
    # every CPU selected reads CINS set); with CRMV each once with Eject Request; with
    # neither, nothing. CTFY (1, 1) notified C001 alone, once more.
    devices = [cpu_device_name(cpu) for cpu in range(max_vcpus)]
    expected = Counter({**{(d, "01"): 1 for d in devices}, **{(d, "03"): 1 for d in devices}})
    expected[("C001", "01")] += 1
    assert notifies == expected, output
    # The loop selected CPU max-1 last; each write wrote only its own bit (WriteAsZeros,
    # not CPEN read back): the byte went from 0x03 to 0x02 after CINS = One, and from
    # 0x01 to 0x08 after CEJ0 = One.
    assert integers(output, r"\_SB_.PRES.CSEL") == [1, max_vcpus - 1, 2]
    assert integers(output, r"\TSTS") == [0x02, 0x08]
    assert "No object was returned from evaluation of \\_SB_.CPUS.C002._EJ0\n" in output
