"""Golden bytes for the AML builder (plugvm.acpi.aml).

Every case puts the ASL it stands for beside the object built with our classes and
the bytes expected (ACPI 6.5, chapter 20). test_iasl_compiles_the_asl_to_the_same_bytes
then compiles each ASL snippet with iasl (acpica-tools) and checks that it gives
the same bytes, so the ASL written here cannot drift from what the bytes mean.
"""

import re
import shutil
import subprocess
from dataclasses import dataclass

import pytest

from plugvm.acpi.aml import (Buffer, Cacheability, Device, DWordIo, DWordMemory, EisaId, EndTag, Integer,
                             Interrupt, Io, Irq, IrqNoFlags, IsaRanges, Memory32Fixed, Method, Name, NameString,
                             One, Ones, Package, QWordMemory, ResourceTemplate, Return, Scope, String,
                             WordBusNumber, WordIo, Zero, encode_pkg_length, pkg_length, to_aml)
from plugvm.acpi.aml_extra import Add, Arg, If, LLess, Local, Store, While
from plugvm.acpi.errors import AcpiError, AmlError
from plugvm.errors import PlugvmError


@dataclass(frozen=True)
class Golden:
    """ASL, the equivalent objects, and their bytes (hex; spaces only for reading)."""

    asl: str
    aml: tuple
    hex: str

    @property
    def expected(self) -> bytes:
        return bytes.fromhex(self.hex)


def golden(asl, *aml, hex):
    return Golden(asl, aml, hex)


def zeros(n):
    return ", ".join(["0x00"] * n)


GOLDEN = {
    # --- Integers: Zero/One/Ones opcodes, then the smallest prefix that holds the value (20.2.3)
    "zero": golden("Name (_UID, Zero)", Name("_UID", Zero()), hex="08 5F554944 00"),
    "zero-int": golden("Name (_UID, 0x00)", Name("_UID", 0), hex="08 5F554944 00"),
    "one": golden("Name (ONE1, One)", Name("ONE1", One()), hex="08 4F4E4531 01"),
    "ones": golden("Name (ALL1, Ones)", Name("ALL1", Ones()), hex="08 414C4C31 FF"),
    "byte-min": golden("Name (B002, 0x02)", Name("B002", 2), hex="08 42303032 0A 02"),
    "byte-max": golden("Name (B0FF, 0xFF)", Name("B0FF", 0xFF), hex="08 42304646 0A FF"),
    "word-min": golden("Name (W100, 0x0100)", Name("W100", 0x100), hex="08 57313030 0B 0001"),
    "word-max": golden("Name (WFFF, 0xFFFF)", Name("WFFF", 0xFFFF), hex="08 57464646 0B FFFF"),
    "dword-min": golden("Name (D100, 0x00010000)", Name("D100", 0x10000), hex="08 44313030 0C 00000100"),
    "dword-max": golden("Name (DFFF, 0xFFFFFFFF)", Name("DFFF", 0xFFFFFFFF), hex="08 44464646 0C FFFFFFFF"),
    "qword-min": golden("Name (Q100, 0x0000000100000000)", Name("Q100", 1 << 32),
                        hex="08 51313030 0E 0000000001000000"),
    "qword-max": golden("Name (QFFE, 0xFFFFFFFFFFFFFFFE)", Name("QFFE", (1 << 64) - 2),
                        hex="08 51464645 0E FEFFFFFFFFFFFFFF"),
    "ones-by-value": golden("Name (ALL2, 0xFFFFFFFFFFFFFFFF)", Name("ALL2", (1 << 64) - 1), hex="08 414C4C32 FF"),
    # --- EisaId: "PNP" → 0x41D0 big-endian, then the product number, big-endian too (6.1.5)
    "eisaid-uart": golden('Name (_HID, EisaId ("PNP0501"))', Name("_HID", EisaId("PNP0501")),
                          hex="08 5F484944 0C 41D00501"),
    "eisaid-pwrb": golden('Name (_HID, EisaId ("PNP0C0C"))', Name("_HID", EisaId("PNP0C0C")),
                          hex="08 5F484944 0C 41D00C0C"),
    "eisaid-word": golden('Name (_CID, EisaId ("PNP0000"))', Name("_CID", EisaId("PNP0000")),
                          hex="08 5F434944 0B 41D0"),
    # --- Strings, buffers, packages
    "string": golden('Name (_HID, "ACPI0013")', Name("_HID", "ACPI0013"),
                     hex="08 5F484944 0D 4143504930303133 00"),
    "string-empty": golden('Name (STRE, "")', Name("STRE", String("")), hex="08 53545245 0D 00"),
    "buffer": golden("Name (BUF0, Buffer () {0x01, 0x02, 0x03})", Name("BUF0", Buffer(b"\1\2\3")),
                     hex="08 42554630 11 06 0A03 010203"),
    "buffer-empty": golden("Name (BUF1, Buffer () {})", Name("BUF1", Buffer(b"")), hex="08 42554631 11 02 00"),
    # PkgLength counts itself: a 62-byte body takes one byte (63), a 63-byte one two (65 = 0x41 0x04)
    "pkglength-1-byte-max": golden(f"Name (B060, Buffer () {{{zeros(60)}}})", Name("B060", Buffer(bytes(60))),
                                   hex="08 42303630 11 3F 0A3C" + "00" * 60),
    "pkglength-2-bytes-min": golden(f"Name (B061, Buffer () {{{zeros(61)}}})", Name("B061", Buffer(bytes(61))),
                                    hex="08 42303631 11 4104 0A3D" + "00" * 61),
    # 4091 data bytes + 3 for the size = 4094, and PkgLength's 3 bytes make 4097 = 0x81 0x00 0x01
    "pkglength-3-bytes": golden(f"Name (B4K_, Buffer () {{{zeros(4091)}}})", Name("B4K_", Buffer(bytes(4091))),
                                hex="08 42344B5F 11 810001 0BFB0F" + "00" * 4091),
    "package-s5": golden("Name (\\_S5, Package (0x04) {0x05, 0x05, Zero, Zero})",
                         Name("\\_S5_", Package(5, 5, 0, 0)), hex="08 5C5F53355F 12 08 04 0A05 0A05 00 00"),
    "package-mixed": golden('Name (PKG0, Package () {"a", \\_SB})', Name("PKG0", Package("a", NameString("\\_SB"))),
                            hex="08 504B4730 12 0A 02 0D6100 5C5F53425F"),
    "package-empty": golden("Name (PKG1, Package () {})", Name("PKG1", Package()), hex="08 504B4731 12 02 00"),
    # --- Names (20.2.2): root, dual and multi paths, parent prefixes, the root alone
    "scope-root": golden("Scope (\\) { Name (RT, One) }", Scope("\\", Name("RT", 1)),
                         hex="10 09 5C00 08 52545F5F 01"),
    "dual-name-path": golden('Device (\\_SB.PCI0) { Name (_HID, EisaId ("PNP0A03")) }',
                             Device("\\_SB_.PCI0", Name("_HID", EisaId("PNP0A03"))),
                             hex="5B82 15 5C2E5F53425F50434930 08 5F484944 0C 41D00A03"),
    "multi-name-path": golden('Device (\\_SB.PCI0) { Name (_HID, EisaId ("PNP0A03")) }\n'
                              "Device (\\_SB.PCI0.S08) { Name (_ADR, 0x00080000) }",
                              Device("\\_SB_.PCI0", Name("_HID", EisaId("PNP0A03"))),
                              Device("\\_SB_.PCI0.S08", Name("_ADR", 0x80000)),
                              hex="5B82 15 5C2E5F53425F50434930 08 5F484944 0C 41D00A03"
                                  "5B82 1A 5C2F03 5F53425F 50434930 5330385F 08 5F414452 0C 00000800"),
    "parent-prefix": golden('Scope (\\_SB) { Device (PCI0) { Name (_HID, EisaId ("PNP0A03")) Name (^PX, One) } }',
                            Scope("\\_SB", Device("PCI0", Name("_HID", EisaId("PNP0A03")), Name("^PX", 1))),
                            hex="10 1E 5C5F53425F 5B82 16 50434930 08 5F484944 0C 41D00A03 08 5E50585F5F 01"),
    # --- Methods and Return (19.6.85, 19.6.120): flags = args | serialized << 3 | sync level << 4
    "method": golden("Method (MTH0, 0, NotSerialized) { Return (0x1234) }",
                     Method("MTH0", 0, Return(0x1234)), hex="14 0A 4D544830 00 A4 0B3412"),
    "method-serialized": golden("Method (MTH2, 2, Serialized) { Return (One) }",
                                Method("MTH2", 2, Return(1), serialized=True), hex="14 08 4D544832 0A A4 01"),
    "method-sync-level": golden('Method (MTH3, 1, Serialized, 3) { Return ("ok") }',
                                Method("MTH3", 1, Return("ok"), serialized=True, sync_level=3),
                                hex="14 0B 4D544833 39 A4 0D6F6B00"),
    # --- Devices: the DSDT's COM1 and power button
    "device-com1": golden("""
        Device (COM1)
        {
            Name (_HID, EisaId ("PNP0501"))
            Name (_UID, Zero)
            Name (_STA, 0x0F)
            Name (_CRS, ResourceTemplate ()
            {
                IO (Decode16, 0x03F8, 0x03F8, 0x00, 0x08)
                IRQNoFlags () {4}
            })
        }""",
        Device("COM1", Name("_HID", EisaId("PNP0501")), Name("_UID", 0), Name("_STA", 0x0F),
               Name("_CRS", ResourceTemplate(Io(0x3F8, 0x3F8, 0, 8), IrqNoFlags(4)))),
        hex="5B82 32 434F4D31 08 5F484944 0C 41D00501 08 5F554944 00 08 5F535441 0A0F"
            "08 5F435253 11 10 0A0D 47 01 F803 F803 00 08 22 1000 79 00"),
    "scope-pwrb": golden('Scope (\\_SB) { Device (PWRB) { Name (_HID, EisaId ("PNP0C0C")) Name (_UID, Zero) } }',
                         Scope("\\_SB_", Device("PWRB", Name("_HID", EisaId("PNP0C0C")), Name("_UID", 0))),
                         hex="10 1D 5C5F53425F 5B82 15 50575242 08 5F484944 0C 41D00C0C 08 5F554944 00"),
    # --- Resource descriptors (6.4), each in a template that ends with End Tag 79 00
    "irq-flags": golden("Name (RES0, ResourceTemplate () { IRQ (Level, ActiveLow, Shared) {10} })",
                        Name("RES0", ResourceTemplate(Irq(10, edge=False, active_low=True, shared=True))),
                        hex="08 52455330 11 09 0A06 23 0004 18 7900"),
    "irq-edge-two": golden("Name (RES1, ResourceTemplate () { IRQ (Edge, ActiveHigh, Exclusive) {3, 4} })",
                           Name("RES1", ResourceTemplate(Irq(3, 4))), hex="08 52455331 11 09 0A06 23 1800 01 7900"),
    "interrupt": golden("Name (RES2, ResourceTemplate () { Interrupt (ResourceConsumer, Edge, ActiveHigh,"
                        " Exclusive) {5} })",
                        Name("RES2", ResourceTemplate(Interrupt(5))),
                        hex="08 52455332 11 0E 0A0B 89 0600 03 01 05000000 7900"),
    "interrupt-shared": golden("Name (RES3, ResourceTemplate () { Interrupt (ResourceConsumer, Level, ActiveLow,"
                               " Shared) {16, 17} })",
                               Name("RES3", ResourceTemplate(Interrupt(16, 17, edge=False, active_low=True,
                                                                       shared=True))),
                               hex="08 52455333 11 12 0A0F 89 0A00 0D 02 10000000 11000000 7900"),
    "memory32fixed": golden("Name (RES4, ResourceTemplate () { Memory32Fixed (ReadWrite, 0xFEC00000, 0x00001000) })",
                            Name("RES4", ResourceTemplate(Memory32Fixed(0xFEC00000, 0x1000))),
                            hex="08 52455334 11 11 0A0E 86 0900 01 0000C0FE 00100000 7900"),
    "memory32fixed-ro": golden("Name (RES5, ResourceTemplate () { Memory32Fixed (ReadOnly, 0xFED00000, 0x400) })",
                               Name("RES5", ResourceTemplate(Memory32Fixed(0xFED00000, 0x400, read_write=False))),
                               hex="08 52455335 11 11 0A0E 86 0900 00 0000D0FE 00040000 7900"),
    # Address spaces (6.4.3.5): type, general flags (MinFixed|MaxFixed, bit 0 = consumer),
    # type flags, then granularity, min, max, translation, length
    "word-bus-number": golden("Name (RES6, ResourceTemplate () { WordBusNumber (ResourceProducer, MinFixed,"
                              " MaxFixed, PosDecode, 0x0000, 0x0000, 0x00FF, 0x0000, 0x0100) })",
                              Name("RES6", ResourceTemplate(WordBusNumber(0, 0xFF))),
                              hex="08 52455336 11 15 0A12 88 0D00 02 0C 00 0000 0000 FF00 0000 0001 7900"),
    "word-io": golden("Name (RES7, ResourceTemplate () { WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode,"
                      " EntireRange, 0x0000, 0x0D00, 0xFFFF, 0x0000, 0xF300) })",
                      Name("RES7", ResourceTemplate(WordIo(0xD00, 0xFFFF))),
                      hex="08 52455337 11 15 0A12 88 0D00 01 0C 03 0000 000D FFFF 0000 00F3 7900"),
    "dword-io": golden("Name (RES8, ResourceTemplate () { DWordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode,"
                       " EntireRange, 0x0, 0x0, 0xCF7, 0x0, 0xCF8) })",
                       Name("RES8", ResourceTemplate(DWordIo(0, 0xCF7))),
                       hex="08 52455338 11 1F 0A1C 87 1700 01 0C 03 00000000 00000000 F70C0000 00000000 F80C0000"
                           "7900"),
    "dword-io-isa": golden("Name (RES9, ResourceTemplate () { DWordIO (ResourceConsumer, MinFixed, MaxFixed,"
                           " PosDecode, ISAOnlyRanges, 0x0, 0x60, 0x6F, 0x0, 0x10) })",
                           Name("RES9", ResourceTemplate(DWordIo(0x60, 0x6F, ranges=IsaRanges.ISA_ONLY,
                                                                 producer=False))),
                           hex="08 52455339 11 1F 0A1C 87 1700 01 0D 02 00000000 60000000 6F000000 00000000 10000000"
                               "7900"),
    "dword-memory": golden("Name (RESA, ResourceTemplate () { DWordMemory (ResourceProducer, PosDecode, MinFixed,"
                           " MaxFixed, NonCacheable, ReadWrite, 0x0, 0xC0000000, 0xE7FFFFFF, 0x0, 0x28000000) })",
                           Name("RESA", ResourceTemplate(DWordMemory(0xC0000000, 0xE7FFFFFF))),
                           hex="08 52455341 11 1F 0A1C 87 1700 00 0C 01 00000000 000000C0 FFFFFFE7 00000000 00000028"
                               "7900"),
    "qword-memory": golden("Name (RESB, ResourceTemplate () { QWordMemory (ResourceProducer, PosDecode, MinFixed,"
                           " MaxFixed, Prefetchable, ReadWrite, 0x0, 0x100000000, 0x1FFFFFFFF, 0x0, 0x100000000) })",
                           Name("RESB", ResourceTemplate(QWordMemory(1 << 32, (2 << 32) - 1,
                                                                     cacheability=Cacheability.PREFETCHABLE))),
                           hex="08 52455342 11 33 0A30 8A 2B00 00 0C 07 0000000000000000 0000000001000000"
                               "FFFFFFFF01000000 0000000000000000 0000000001000000 7900"),
    "qword-memory-consumer": golden("Name (RESC, ResourceTemplate () { QWordMemory (ResourceConsumer, PosDecode,"
                                    " MinFixed, MaxFixed, Cacheable, ReadOnly, 0x0, 0x100000000, 0x13FFFFFFF, 0x0,"
                                    " 0x40000000) })",
                                    Name("RESC", ResourceTemplate(QWordMemory(1 << 32, (1 << 32) + (1 << 30) - 1,
                                                                              cacheability=Cacheability.CACHEABLE,
                                                                              read_write=False, producer=False))),
                                    hex="08 52455343 11 33 0A30 8A 2B00 00 0D 02 0000000000000000 0000000001000000"
                                        "FFFFFF3F01000000 0000000000000000 0000004000000000 7900"),
    # --- Loops and arithmetic (aml_extra): While is If's shape, WhileOp PkgLength Predicate
    # TermList (20.2.5.3); Add and LLess are Type2 opcodes (20.2.5.4), Add with a Target
    # (a NullName 0x00 when the result is only returned)
    "while-lless-add": golden("Method (LOOP, 0, NotSerialized) { Store (Zero, Local0) "
                              "While (LLess (Local0, 0x04)) { Add (Local0, One, Local0) } }",
                              Method("LOOP", 0, Store(0, Local(0)),
                                     While(LLess(Local(0), 4), Add(Local(0), 1, Local(0)))),
                              hex="14 13 4C4F4F50 00 70 00 60 A2 09 95 60 0A04 72 60 01 60"),
    "add-no-target": golden("Method (ADD2, 1, NotSerialized) { Return (Add (Arg0, 0x02)) }",
                            Method("ADD2", 1, Return(Add(Arg(0), 2))),
                            hex="14 0C 41444432 01 A4 72 68 0A02 00"),
    "lless-if": golden("Method (LESS, 2, NotSerialized) { If (LLess (Arg0, Arg1)) { Return (One) } "
                       "Return (Zero) }",
                       Method("LESS", 2, If(LLess(Arg(0), Arg(1)), Return(1)), Return(0)),
                       hex="14 0F 4C455353 02 A0 06 95 68 69 A4 01 A4 00"),
}


@pytest.mark.parametrize("case", GOLDEN.values(), ids=GOLDEN.keys())
def test_golden_bytes(case):
    assert b"".join(obj.to_bytes() for obj in case.aml) == case.expected


def test_bytes_of_an_object_is_its_to_bytes():
    name = Name("_UID", 0)
    assert bytes(name) == name.to_bytes() == bytes.fromhex("08 5F554944 00")


# --- PkgLength (20.2.4): bits 7:6 of the lead byte count the bytes that follow;
# with any, the lead byte keeps only 4 bits of the value (bits 5:4 are reserved).
@pytest.mark.parametrize("body, encoded", [
    (0, "01"),                        # the PkgLength alone
    (62, "3F"),                       # 63: the largest one-byte value
    (63, "4104"),                     # 65 = 0x041 → lead 0x40 | 0x1, then 0x04
    (4093, "4FFF"),                   # 4095 = 0xFFF: the largest two-byte value
    (4094, "810001"),                 # 4097 = 0x1001 → 0x80 | 0x1, then 0x0100
    (0xFFFFC, "8FFFFF"),              # 0xFFFFF: the largest three-byte value
    (0xFFFFD, "C1000001"),            # 0x100001 → 0xC0 | 0x1, then 0x010000
    ((1 << 28) - 5, "CFFFFFFF"),      # 0xFFFFFFF: the largest PkgLength there is
])
def test_pkg_length_counts_itself(body, encoded):
    assert pkg_length(body) == bytes.fromhex(encoded)


def test_pkg_length_beyond_28_bits_is_refused():
    with pytest.raises(AmlError):
        pkg_length((1 << 28) - 4)
    with pytest.raises(AmlError):
        encode_pkg_length(1 << 28)


def test_encode_pkg_length_is_the_raw_encoding():
    # A Field's ReservedField (20.2.5.2) uses the encoding for a bit count that does not count itself.
    assert encode_pkg_length(0x40) == bytes.fromhex("4004")


def test_resource_template_checksum_makes_the_template_sum_to_zero():
    """ResourceTemplate () { IO (Decode16, 0x03F8, 0x03F8, 0x00, 0x08) IRQNoFlags () {4} },
    with the End Tag's checksum computed instead of iasl's 0 (6.4.2.9)."""
    template = ResourceTemplate(Io(0x3F8, 0x3F8, 0, 8), IrqNoFlags(4), checksum=True)
    assert template.to_bytes() == bytes.fromhex("11 10 0A0D 47 01 F803 F803 00 08 22 1000 79 0F")
    assert sum(template.data) % 256 == 0
    assert EndTag().to_bytes() == bytes.fromhex("79 00")


def test_empty_resource_template_is_only_the_end_tag():
    """ResourceTemplate () {} (iasl warns about it, so it is not among the golden cases)."""
    assert ResourceTemplate().to_bytes() == bytes.fromhex("11 05 0A02 7900")


def test_names_are_padded_and_rooted():
    assert NameString("PCI").to_bytes() == b"PCI_"
    assert NameString("\\_SB.PCI0").to_bytes() == b"\\\x2e_SB_PCI0"
    assert NameString("^^X").to_bytes() == b"^^X___"
    assert NameString("\\").to_bytes() == b"\\\x00"


def test_integer_aliases_and_plain_values():
    assert Integer(0).to_bytes() == Zero().to_bytes() == b"\x00"
    assert to_aml(7).to_bytes() == b"\x0a\x07"
    assert to_aml("x").to_bytes() == b"\x0dx\x00"
    assert EisaId("PNP0501").value == 0x0105D041     # bytes 41 D0 05 01


@pytest.mark.parametrize("make", [
    lambda: NameString("com1"),           # lower case
    lambda: NameString("COM12"),          # five characters
    lambda: NameString("1COM"),           # leading digit
    lambda: NameString("\\_SB_..COM1"),   # empty segment
    lambda: NameString("^"),              # a prefix naming nothing
    lambda: Integer(-1),
    lambda: Integer(1 << 64),
    lambda: Integer(True),
    lambda: to_aml(1.5),
    lambda: EisaId("PNP501"),
    lambda: EisaId("pnp0501"),
    lambda: String("café"),
    lambda: String("a\0b"),
    lambda: Package(*range(256)),
    lambda: Method("MTH0", 8),
    lambda: Method("MTH0", 0, sync_level=16),
    lambda: Irq(16),
    lambda: IrqNoFlags(),
    lambda: Interrupt(),
    lambda: Interrupt(1 << 32),
    lambda: Io(0x10000, 0x10000, 0, 8),
    lambda: Io(0x3F8, 0x3F0, 0, 8),
    lambda: Memory32Fixed(0xFFFFF000, 0x2000),
    lambda: DWordMemory(0x2000, 0x1000),
    lambda: DWordIo(0, 0xFFFFFFFF),       # the whole space: its length does not fit
    lambda: WordBusNumber(0, 0x10000),
])
def test_values_an_encoding_cannot_hold_are_refused(make):
    with pytest.raises(AmlError) as raised:
        make()
    assert isinstance(raised.value, AcpiError) and isinstance(raised.value, PlugvmError)
    assert isinstance(raised.value, ValueError)


# --- The ASL beside the bytes is true: iasl compiles it to the same bytes.

def iasl() -> str:
    path = shutil.which("iasl")
    if path is None:
        pytest.fail("iasl is not installed: the AML golden bytes are checked against it "
                    "(Debian: apt-get install acpica-tools)")
    return path


@pytest.mark.parametrize("case", GOLDEN.values(), ids=GOLDEN.keys())
def test_iasl_compiles_the_asl_to_the_same_bytes(case, tmp_path):
    source = tmp_path / "golden.asl"
    source.write_text(f'DefinitionBlock ("", "SSDT", 2, "CLOUDH", "GOLDEN", 1)\n{{\n{case.asl}\n}}\n')
    # -on: keep name paths as written (iasl would drop a redundant leading backslash)
    run = subprocess.run([iasl(), "-on", "-p", str(tmp_path / "golden"), str(source)],
                         capture_output=True, text=True, timeout=60)
    report = run.stdout + run.stderr
    assert run.returncode == 0 and re.search(r"Compilation successful\. 0 Errors, 0 Warnings", report), report
    compiled = (tmp_path / "golden.aml").read_bytes()[36:]    # after the table header
    assert compiled.hex(" ") == case.expected.hex(" ")
