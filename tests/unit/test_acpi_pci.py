"""The PCI segment's ACPI: golden bytes for the AML constructs it added (aml_extra),
the MCFG layout, and ACPICA over whole tables with the segment in the DSDT, with and
without hotplug: iasl disassembles and recompiles them cleanly, and acpiexec loads
them and evaluates _CRS, _PRT, a slot's _ADR and (with hotplug) the eject path."""

import re
import struct

import pytest

from plugvm.acpi import AcpiError, AcpiPlatform, build
from plugvm.acpi.aml import Device, Method, Name, Package, Return
from plugvm.acpi.aml_extra import (Acquire, And, Arg, Field, FieldAccess, FieldUpdate, If, LEqual, Local, MethodCall,
                                   Mutex, Notify, OperationRegion, RegionSpace, Release, ShiftLeft, Store, ToUuid)
from plugvm.acpi.errors import AmlError
from plugvm.acpi.mcfg import Mcfg
from plugvm.acpi.pci_aml import PCI_INTX_IRQS, host_bridge, pci_segment_aml, pci_segments_aml
from plugvm.testing.acpica import check_round_trip, problems, run, run_over_tables, tool

MMCONFIG, MEM32, MEM64 = 0xE800_0000, (0xC000_0000, 640 << 20), (1 << 36, 64 << 30)
HOTPLUG = (0xFFFF_EF00_0000, 0x10)


# --- Golden bytes: (ASL, objects, hex). iasl compiles each ASL to the same bytes.

GOLDEN = {
    "mutex": ("Mutex (BLCK, 0x00)", (Mutex("BLCK", 0),), "5B01 424C434B 00"),
    "opregion": ("OperationRegion (PCST, SystemMemory, 0xE0000000, 0x10)",
                 (OperationRegion("PCST", RegionSpace.SYSTEM_MEMORY, 0xE000_0000, 0x10),),
                 "5B80 50435354 00 0C000000E0 0A10"),
    "field": ("OperationRegion (PCST, SystemMemory, 0x10, 0x10)\n"
              "Field (PCST, DWordAcc, NoLock, WriteAsZeros) { PCIU, 32, PCID, 32 }",
              (OperationRegion("PCST", RegionSpace.SYSTEM_MEMORY, 0x10, 0x10),
               Field("PCST", [("PCIU", 32), ("PCID", 32)], access=FieldAccess.DWORD,
                     update=FieldUpdate.WRITE_AS_ZEROS)),
              "5B80 50435354 00 0A10 0A10"
              "5B81 10 50435354 43 50434955 20 50434944 20"),      # NamedField: NameSeg, bits as PkgLength
    "field-reserved": ("OperationRegion (PRST, SystemIO, 0x0CD8, 0x0C)\n"
                       "Field (PRST, ByteAcc, NoLock, Preserve) { , 32, CPEN, 1 }",
                       (OperationRegion("PRST", RegionSpace.SYSTEM_IO, 0x0CD8, 0x0C),
                        Field("PRST", [(None, 32), ("CPEN", 1)], access=FieldAccess.BYTE)),
                       "5B80 50525354 01 0BD80C 0A0C"
                       "5B81 0D 50525354 01 00 20 4350454E 01"),   # ReservedField: 0x00, bits
    "acquire-store-shift-release": (
        "Mutex (BLCK, 0x00)\n"
        "Method (PCEJ, 2, Serialized) { Acquire (BLCK, 0xFFFF) Store (Arg1, Local1) "
        "ShiftLeft (Local1, Arg0, Local2) Release (BLCK) Return (Local2) }",
        (Mutex("BLCK"), Method("PCEJ", 2, Acquire("BLCK"), Store(Arg(1), Local(1)),
                               ShiftLeft(Local(1), Arg(0), Local(2)), Release("BLCK"), Return(Local(2)),
                               serialized=True)),
        "5B01 424C434B 00"
        "14 1D 5043454A 0A 5B23 424C434B FFFF 70 69 61 79 61 68 62 5B27 424C434B A4 62"),
    "and-if-lequal-notify": (
        "Device (S001) { Name (_ADR, 0x00010000) }\n"
        "Method (DVNT, 2, Serialized) { And (Arg0, 0x02, Local0) If (LEqual (Local0, 0x02)) { Notify (S001, Arg1) } }",
        (Device("S001", Name("_ADR", 0x10000)),
         Method("DVNT", 2, And(Arg(0), 2, Local(0)), If(LEqual(Local(0), 2), Notify("S001", Arg(1))), serialized=True)),
        "5B82 0F 53303031 08 5F414452 0C 00000100"
        "14 17 44564E54 0A 7B 68 0A02 60 A0 0B 93 60 0A02 86 53303031 69"),
    "method-call": (
        "Method (M000, 2, NotSerialized) { Return (Arg0) }\n"
        "Method (M001, 0, NotSerialized) { Return (M000 (One, 0x05)) }\n"
        "Method (M002, 0, NotSerialized) { M001 () }",
        (Method("M000", 2, Return(Arg(0))), Method("M001", 0, Return(MethodCall("M000", 1, 5))),
         Method("M002", 0, MethodCall("M001"))),
        "14 08 4D303030 02 A4 68"
        "14 0E 4D303031 00 A4 4D303030 01 0A05"
        "14 0A 4D303032 00 4D303031"),
    "touuid": ('Name (UUID, ToUUID ("e5c937d0-3553-4d7a-9117-ea4d19c3434d"))',
               (Name("UUID", ToUuid("e5c937d0-3553-4d7a-9117-ea4d19c3434d")),),
               "08 55554944 11 13 0A10 D037C9E5 5335 7A4D 9117 EA4D19C3434D"),   # first three fields LE
}


@pytest.mark.parametrize("asl, objects, hex_bytes", GOLDEN.values(), ids=GOLDEN.keys())
def test_golden_bytes(asl, objects, hex_bytes):
    assert b"".join(o.to_bytes() for o in objects).hex(" ") == bytes.fromhex(hex_bytes).hex(" ")


@pytest.mark.parametrize("asl, objects, hex_bytes", GOLDEN.values(), ids=GOLDEN.keys())
def test_iasl_compiles_the_golden_asl_to_the_same_bytes(asl, objects, hex_bytes, tmp_path):
    (tmp_path / "golden.asl").write_text(f'DefinitionBlock ("", "SSDT", 2, "CLOUDH", "GOLDEN", 1)\n{{\n{asl}\n}}\n')
    rc, output = run(tool("iasl"), "-on", "-p", "golden", "golden.asl", cwd=tmp_path)
    assert rc == 0 and re.search(r"Compilation successful\. 0 Errors, 0 Warnings", output), output
    assert (tmp_path / "golden.aml").read_bytes()[36:].hex(" ") == bytes.fromhex(hex_bytes).hex(" ")


@pytest.mark.parametrize("make", [lambda: Local(8), lambda: Arg(7), lambda: Mutex("M", 16),
                                  lambda: Acquire("M", 1 << 16), lambda: Field("R", [("F", 0)]),
                                  lambda: ToUuid("not-a-uuid")])
def test_bad_constructs_are_refused(make):
    with pytest.raises(AmlError):
        make()


# --- MCFG

def test_mcfg_has_one_allocation_per_segment():
    table = Mcfg([(0, 0xE800_0000, 0, 0), (1, 0xE810_0000, 0, 3)]).to_bytes()
    assert table[:4] == b"MCFG" and table[8] == 1 and table[10:16] == b"CLOUDH"
    assert struct.unpack_from("<I", table, 4)[0] == len(table) == 36 + 8 + 2 * 16 and sum(table) % 256 == 0
    assert table[36:44] == bytes(8)
    assert struct.unpack_from("<QHBBI", table, 44) == (0xE800_0000, 0, 0, 0, 0)
    assert struct.unpack_from("<QHBBI", table, 60) == (0xE810_0000, 1, 0, 3, 0)


@pytest.mark.parametrize("segments", [[(0, 0xE800_0000, 1, 0)], [(0, 0xE800_0000, 0, 256)], [(0, 0xE800_1000, 0, 0)],
                                      [(0, 0xE800_0000, 0, 0), (0, 0xE810_0000, 0, 0)], [(1 << 16, 0xE800_0000, 0, 0)]])
def test_bad_mcfg_segments_are_refused(segments):
    with pytest.raises(AcpiError):
        Mcfg(segments)


# --- The segment's AML, built

def test_prt_routes_inta_of_each_slot_to_eight_shared_gsis():
    prt = host_bridge(0, MMCONFIG, MEM32, MEM64).to_bytes()
    start = prt.index(b"_PRT") + 4
    # Name (_PRT, Package (0x20) {Package (0x04) {0xFFFF, Zero, Zero, 0x05}, Package (0x04) {0x0001FFFF, ...
    head = bytes.fromhex("12 41 18 20  12 09 04 0B FFFF 00 00 0A 05  12 0B 04 0C FFFF0100 00 00 0A 06")
    assert prt[start:start + len(head)] == head
    for slot in range(32):
        # {slot << 16 | 0xFFFF (any function), pin 0 (INTA), source Zero (so a GSI follows), GSI}
        entry = Package(slot << 16 | 0xFFFF, 0, 0, 5 + slot % 8).to_bytes()
        assert entry in prt[start:], slot
    assert PCI_INTX_IRQS == (5, 6, 7, 8, 9, 10, 11, 12)


@pytest.mark.parametrize("make", [
    lambda: pci_segment_aml(0, MMCONFIG, (0xF000_0000, 1 << 29), MEM64),        # past 4 GiB
    lambda: pci_segment_aml(0, MMCONFIG, MEM32, (1 << 36, 0)),
    lambda: pci_segment_aml(0x100, MMCONFIG, MEM32, MEM64),
    lambda: pci_segment_aml(0, MMCONFIG, MEM32, MEM64, hotplug_region=(0x1000, 8)),
    lambda: pci_segment_aml(0, MMCONFIG, MEM32, MEM64, irqs=()),
])
def test_bad_segments_are_refused(make):
    with pytest.raises(AcpiError):
        make()


def test_a_second_segment_has_no_legacy_io():
    crs = host_bridge(1, MMCONFIG + (1 << 20), MEM32, MEM64).to_bytes()
    assert b"PC01" in crs and b"\x47\x01\xf8\x0c" not in crs     # IO (Decode16, 0xCF8, ...)


# --- ACPICA over the whole tables

VARIANTS = {"no-hotplug": None, "hotplug": HOTPLUG, "two-segments": HOTPLUG}
# Two segments as a machine with num_pci_segments=2 shares the windows out.
SEGMENTS = [(0, MMCONFIG, (0xC000_0000, 320 << 20), (1 << 36, 32 << 30)),
            (1, MMCONFIG + (1 << 20), (0xD400_0000, 320 << 20), ((1 << 36) + (32 << 30), 32 << 30))]
EVALUATE = [r"\_SB_.PC00._CRS", r"\_SB_.PC00._PRT", r"\_SB_.PC00.S001._ADR", r"\_SB_.MBRD._CRS"]
EJECT = [r"\_SB_.PHPR.PSCN", r"\_SB_.PC00.S003._EJ0 0", r"\_SB_.PHPR.B0EJ"]    # acpiexec simulates the region


def image(variant):
    if variant == "two-segments":
        fragments = pci_segments_aml(SEGMENTS, hotplug_region=HOTPLUG)
        mcfg = Mcfg([(segment, base, 0, 0) for segment, base, _, _ in SEGMENTS])
    else:
        fragments = pci_segment_aml(0, MMCONFIG, MEM32, MEM64, hotplug_region=VARIANTS[variant])
        mcfg = Mcfg([(0, MMCONFIG, 0, 0)])
    return build(AcpiPlatform(boot_cpus=2, max_cpus=2, dsdt_fragments=tuple(fragments), extra_tables=(mcfg,)))


@pytest.fixture(scope="module", params=VARIANTS)
def acpica(request, tmp_path_factory):
    """(variant, directory, {step: (rc, output)}) after iasl and acpiexec ran over its tables."""
    variant, directory = request.param, tmp_path_factory.mktemp(f"pci-{request.param}")
    commands = ["Paths", "Predefined", "Resources"] + [f"Evaluate {p}" for p in EVALUATE]
    commands += [f"Evaluate {p}" for p in EJECT] if VARIANTS[variant] else []
    commands += [r"Evaluate \_SB_.PC01._CRS", r"Evaluate \_SB_.PC01.S000._ADR"] if variant == "two-segments" else []
    return variant, directory, run_over_tables(tables(variant), directory, commands)


def tables(variant):
    return {sig: t for sig, t in image(variant).tables.items() if sig != "RSDP"}


def test_iasl_disassembles_every_table_and_recompiles_the_dsdt(acpica):
    variant, directory, steps = acpica
    check_round_trip(tables(variant), directory, steps)
    mcfg = (directory / "mcfg.dsl").read_text()
    assert re.search(r"Base Address : 00000000E8000000\s.*Segment Group Number : 0000\s.*Start Bus Number : 00\s"
                     r".*End Bus Number : 00", mcfg, re.S), mcfg


def test_acpiexec_loads_the_tables_and_evaluates_the_segment(acpica):
    variant, _, steps = acpica
    rc, output = steps["acpiexec"]
    assert rc == 0 and not problems(output), output
    assert "ACPI: 1 ACPI AML tables successfully acquired and loaded" in output
    paths = set(re.findall(r"^\s*\d+\s+(\w+)\s+(\S+)\s*$", output, re.M))
    expected = {("Device", "_SB.PC00"), ("Device", "_SB.PC00.S031"), ("Device", "_SB.MBRD"),
                ("Method", "_SB.PC00._DSM"), ("Method", "_SB.PC00._PXM")}
    hotplug = {("Device", "_SB.PHPR"), ("Method", "_SB.PHPR.PCEJ"), ("Method", "_SB.PC00.PCNT"),
               ("Method", "_SB.PC00.DVNT"), ("Method", "_SB.PC00.S001._EJ0")}
    assert expected <= paths, output
    with_hotplug = VARIANTS[variant] is not None
    assert (hotplug <= paths) == with_hotplug and (hotplug & paths == set()) == (not with_hotplug)
    for path in EVALUATE:
        assert f"Evaluation of {path} returned object" in output, path
    assert "[Package] Contains 32 Elements:" in output
    assert re.search(r"Evaluation of \\_SB_.PC00.S001._ADR returned.*\n\s*\[Integer\] = 0*10000\n", output), output
    # the windows, as ACPICA's resource manager decodes _CRS (Resources)
    windows = re.findall(r"Address Minimum : (\w+)\s+Address Maximum : (\w+)", output)
    if variant == "two-segments":
        expected_windows = [("0CF8", "0CF8"), ("C0000000", "D3FFFFFF"), ("D4000000", "E7FFFFFF"),
                            ("0000001000000000", "00000017FFFFFFFF"), ("0000001800000000", "0000001FFFFFFFFF")]
        assert {("Device", "_SB.PC01"), ("Device", "_SB.PC01.S000"), ("Method", "_SB.PC01.PCNT")} <= paths, output
        assert re.search(r"Evaluation of \\_SB_.PC01.S000._ADR returned.*\n\s*\[Integer\] = 0+\n", output), output
    else:
        expected_windows = [("0CF8", "0CF8"), ("0000", "0CF7"), ("0D00", "FFFF"), ("C0000000", "E7FFFFFF"),
                            ("0000001000000000", "0000001FFFFFFFFF")]
    for window in expected_windows:
        assert window in windows, window
    if variant == "hotplug":
        # S003's _EJ0 selected segment 0 and wrote bit 3 to B0EJ
        assert re.search(r"Evaluation of \\_SB_.PHPR.B0EJ returned.*\n\s*\[Integer\] = 0*8\n", output), output
