"""The ACPI tables plugvm.acpi.build() lays out: read back from the blob as a guest
would (RSDP → XSDT → FACP → DSDT), checked field by field against ACPI 6.5, and
checked by ACPICA itself: iasl disassembles and recompiles every table, and
acpiexec loads them and walks the namespace, the predefined names and _CRS."""

import re
import struct
from concurrent.futures import ThreadPoolExecutor
from functools import cache

import pytest

from plugvm.acpi import AcpiError, AcpiPlatform, build
from plugvm.acpi.aml import (Cacheability, Device, DWordIo, DWordMemory, Interrupt, Method, Name, QWordMemory,
                             ResourceTemplate, Return, Scope, WordBusNumber)
from plugvm.acpi.sdt import SystemTable
from plugvm.devices.acpi_pm import SleepResetRegister
from plugvm.errors import PlugvmError
from plugvm.testing.acpica import CLEAN_COMPILE, problems, run, tool


class Mcfg(SystemTable):
    """An MCFG (PCI Firmware Spec 3.2, 4.1.2) with one segment, as the PCI issue will add."""

    SIGNATURE, REVISION = b"MCFG", 1

    def body(self):
        return bytes(8) + struct.pack("<QHBBI", 0xE800_0000, 0, 0, 0, 0)


PCI_AND_GED = (   # fragments shaped like those the PCI segment and the GED will hand in
    Scope("\\_SB_",
          Device("PCI0", Name("_HID", "PNP0A08"), Name("_CID", "PNP0A03"), Name("_SEG", 0), Name("_UID", 0),
                 Name("_CRS", ResourceTemplate(WordBusNumber(0, 0), DWordIo(0, 0xCF7), DWordIo(0xD00, 0xFFFF),
                                               DWordMemory(0xC000_0000, 0xE7FF_FFFF),
                                               QWordMemory(1 << 36, (1 << 37) - 1,
                                                           cacheability=Cacheability.PREFETCHABLE))),
                 Method("_STA", 0, Return(0x0F))),
          Device("GED_", Name("_HID", "ACPI0013"), Name("_UID", 0),
                 Name("_CRS", ResourceTemplate(Interrupt(5))))),
)

CONFIGS = {
    "1of1": AcpiPlatform(boot_cpus=1, max_cpus=1),
    "2of2": AcpiPlatform(boot_cpus=2, max_cpus=2),
    "2of8": AcpiPlatform(boot_cpus=2, max_cpus=8),
    "4of255": AcpiPlatform(boot_cpus=4, max_cpus=255),
    "1of300-no-com1": AcpiPlatform(boot_cpus=1, max_cpus=300, com1=False),
    "pci-ged-mcfg": AcpiPlatform(boot_cpus=2, max_cpus=4, dsdt_fragments=PCI_AND_GED, extra_tables=(Mcfg(),)),
}
configs = pytest.mark.parametrize("name", CONFIGS)


@cache
def image(name):
    return build(CONFIGS[name])


def table_at(img, addr):
    """The table at guest address addr, its length taken from its header."""
    offset = addr - img.rsdp_addr
    assert 0 <= offset and offset + 36 <= len(img.blob), f"{addr:#x} is outside the blob"
    length = struct.unpack_from("<I", img.blob, offset + 4)[0]
    return img.blob[offset:offset + length]


def walk(img):
    """signature → (address, bytes), found from the RSDP as a guest finds them."""
    rsdp = img.blob[:36]
    xsdt_addr = struct.unpack_from("<Q", rsdp, 24)[0]
    xsdt = table_at(img, xsdt_addr)
    found = {"RSDP": (img.rsdp_addr, rsdp), "XSDT": (xsdt_addr, xsdt)}
    for addr in struct.unpack_from(f"<{(len(xsdt) - 36) // 8}Q", xsdt, 36):
        table = table_at(img, addr)
        found[table[:4].decode()] = (addr, table)
    dsdt_addr = struct.unpack_from("<Q", found["FACP"][1], 140)[0]
    found["DSDT"] = (dsdt_addr, table_at(img, dsdt_addr))
    return found


def madt_entries(madt):
    """(type, bytes) of each interrupt controller structure."""
    entries, offset = [], 44
    while offset < len(madt):
        kind, length = madt[offset], madt[offset + 1]
        entries.append((kind, madt[offset:offset + length]))
        offset += length
    assert offset == len(madt), "the last MADT entry runs past the table"
    return entries


# --- Layout, pointers and checksums

@configs
def test_every_checksum_sums_to_zero(name):
    img = image(name)
    for signature, table in img.tables.items():
        assert sum(table) % 256 == 0, signature
    assert sum(img.tables["RSDP"][:20]) % 256 == 0       # the ACPI 1.0 checksum
    assert set(img.tables) >= {"RSDP", "XSDT", "FACP", "APIC", "DSDT"}


@configs
def test_the_blob_holds_what_the_rsdp_points_at(name):
    img = image(name)
    found = walk(img)
    assert {sig: data for sig, (_, data) in found.items()} == img.tables
    rsdp = img.tables["RSDP"]
    assert rsdp[:8] == b"RSD PTR " and rsdp[9:15] == b"CLOUDH" and rsdp[15] == 2
    assert struct.unpack_from("<II", rsdp, 16) == (0, 36)      # no RSDT; the length of a revision 2 RSDP
    facp = img.tables["FACP"]
    assert struct.unpack_from("<II", facp, 36) == (0, 0)      # no FACS, no 32-bit DSDT address
    for signature, table in img.tables.items():
        if signature != "RSDP":
            assert struct.unpack_from("<I", table, 4)[0] == len(table)
            assert table[10:16] == b"CLOUDH"


@configs
def test_tables_follow_the_rsdp_in_order_aligned_and_below_the_limit(name):
    img = image(name)
    found = walk(img)
    order = sorted(found, key=lambda sig: found[sig][0])
    extras = [sig for sig in img.tables if sig not in ("RSDP", "DSDT", "FACP", "APIC", "XSDT")]
    assert order == ["RSDP", "DSDT", "FACP", "APIC", *extras, "XSDT"]
    assert all(addr % 16 == 0 for addr, _ in found.values())
    ends = [addr + len(data) for addr, data in sorted(found.values())]
    starts = [addr for addr, _ in sorted(found.values())]
    assert all(end <= start for end, start in zip(ends, starts[1:]))      # no overlaps
    assert img.rsdp_addr + len(img.blob) == ends[-1] <= CONFIGS[name].limit


def test_extra_tables_are_listed_in_the_xsdt():
    found = walk(image("pci-ged-mcfg"))
    xsdt = found["XSDT"][1]
    assert list(struct.unpack_from("<3Q", xsdt, 36)) == [found[s][0] for s in ("FACP", "APIC", "MCFG")]


# --- MADT

@pytest.mark.parametrize("boot, max_cpus", [(1, 1), (2, 2), (2, 8), (4, 255), (1, 300), (254, 256)])
def test_madt_has_one_processor_per_possible_vcpu(boot, max_cpus):
    madt = build(AcpiPlatform(boot_cpus=boot, max_cpus=max_cpus)).tables["APIC"]
    assert madt[8] == 5                                               # revision: Online Capable exists
    assert struct.unpack_from("<II", madt, 36) == (0xFEE0_0000, 0)    # LAPIC address; PCAT_COMPAT clear
    entries = madt_entries(madt)
    cpus = []
    for kind, entry in entries:
        if kind == 0:      # Processor Local APIC: UID, APIC id, flags
            cpus.append(struct.unpack_from("<BBI", entry, 2))
        elif kind == 9:    # Processor Local x2APIC: x2APIC id, flags, UID
            assert len(entry) == 16
            x2apic_id, flags, uid = struct.unpack_from("<III", entry, 4)
            assert x2apic_id >= 255
            cpus.append((uid, x2apic_id, flags))
    assert [(uid, apic_id) for uid, apic_id, _ in cpus] == [(i, i) for i in range(max_cpus)]
    assert [flags for _, _, flags in cpus] == [1] * boot + [2] * (max_cpus - boot)   # Enabled, or Online Capable
    assert sum(kind == 0 for kind, _ in entries) == min(max_cpus, 255)
    assert sum(kind == 9 for kind, _ in entries) == max(max_cpus - 255, 0)
    others = [entry for kind, entry in entries if kind not in (0, 9)]
    assert others == [struct.pack("<BBBBII", 1, 12, 0, 0, 0xFEC0_0000, 0),   # IOAPIC 0, GSIs from 0
                      struct.pack("<BBBBIH", 2, 10, 0, 0, 2, 0)]             # ISA IRQ 0 → GSI 2, bus defaults


# --- FADT

def gas(space, bits, access, address):
    return struct.pack("<BBBBQ", space, bits, 0, access, address)


def test_fadt_describes_a_hardware_reduced_platform():
    img = image("2of2")
    facp = img.tables["FACP"]
    assert len(facp) == 276 and facp[8] == 6 and facp[131] == 3                 # FADT 6.3
    assert struct.unpack_from("<I", facp, 112)[0] == (1 << 20) | (1 << 10) | (1 << 8)
    assert facp[116:128] == gas(1, 8, 1, 0x600) and facp[128] == 1             # RESET_REG, RESET_VALUE
    assert facp[244:256] == facp[256:268] == gas(1, 8, 1, 0x600)                # SLEEP_CONTROL/STATUS_REG
    assert facp[208:220] == gas(1, 32, 3, 0x608) and facp[91] == 4             # X_PM_TMR_BLK, PM_TMR_LEN
    assert struct.unpack_from("<Q", facp, 140)[0] == walk(img)["DSDT"][0]      # X_DSDT
    assert facp[268:276] == b"CLOUDHYP"
    assert struct.unpack_from("<H", facp, 109)[0] == 0                          # IAPC_BOOT_ARCH


def test_the_sleep_register_powers_off_and_resets_with_what_the_tables_say():
    """What Linux writes: SLP_TYPa from \\_S5_ << 2 | SLP_EN (0x34), or RESET_VALUE."""
    facp, dsdt = image("2of2").tables["FACP"], image("2of2").tables["DSDT"]
    s5 = dsdt.index(b"\\_S5_")
    assert dsdt[s5 + 5:s5 + 14] == bytes.fromhex("12 08 04 0A05 0A05 00 00")    # Package {5, 5, 0, 0}
    slp_typ = dsdt[s5 + 9]
    outcome = []
    register = SleepResetRegister(lambda: outcome.append("poweroff"), lambda: outcome.append("reset"))
    register.write(0, memoryview(bytes([slp_typ << 2 | 1 << 5])))
    register.write(0, memoryview(bytes([facp[128]])))
    assert (slp_typ << 2 | 1 << 5) == 0x34 and outcome == ["poweroff", "reset"]


def test_com1_can_be_left_out():
    assert b"COM1" in image("2of2").tables["DSDT"]
    assert b"COM1" not in image("1of300-no-com1").tables["DSDT"]
    assert b"PWRB" in image("1of300-no-com1").tables["DSDT"]


# --- Refusals

@pytest.mark.parametrize("make", [
    lambda: AcpiPlatform(boot_cpus=0, max_cpus=1),
    lambda: AcpiPlatform(boot_cpus=3, max_cpus=2),
    lambda: AcpiPlatform(boot_cpus=1, max_cpus=1, rsdp_addr=0xA0008),
    lambda: build(AcpiPlatform(boot_cpus=1, max_cpus=1, limit=0xA0100)),
    lambda: build(AcpiPlatform(boot_cpus=1, max_cpus=1, limit=0xA4000,     # a 28 KiB DSDT in 16 KiB
                               dsdt_fragments=(Scope("\\", *[Name(f"N{i:03X}", 1 << 40) for i in range(0x800)]),))),
    lambda: build(AcpiPlatform(boot_cpus=1, max_cpus=1, extra_tables=(Mcfg(), Mcfg()))),
    lambda: build(AcpiPlatform(boot_cpus=1, max_cpus=1, extra_tables=(b"MCFG" + bytes(40),))),
    lambda: build(AcpiPlatform(boot_cpus=1, max_cpus=1, extra_tables=(image("1of1").tables["FACP"],))),
])
def test_bad_platforms_and_oversized_tables_are_refused(make):
    with pytest.raises(AcpiError) as raised:
        make()
    assert isinstance(raised.value, PlugvmError) and isinstance(raised.value, ValueError)


def test_tables_that_fit_exactly_are_accepted():
    end = image("1of1").rsdp_addr + len(image("1of1").blob)
    assert build(AcpiPlatform(boot_cpus=1, max_cpus=1, limit=end)).blob == image("1of1").blob


# --- ACPICA: iasl and acpiexec

ACPIEXEC_COMMANDS = "Namespace;Paths;Predefined;Integrity;Resources;Evaluate \\_S5_"


def without_x2apic_online_capable(madt):
    """The MADT as iasl reads it: ACPICA decodes only Enabled among the Local x2APIC
    flags (AcpiDmTableInfoMadt9), though Table 5.29 gives them Online Capable too, so
    a recompiled MADT has bit 1 clear in its x2APIC entries."""
    out = bytearray(madt)
    offset = 44
    while offset < len(out):
        if out[offset] == 9:
            out[offset + 8] &= ~2
        offset += out[offset + 1]
    return bytes(out)


def asl_code(asl):
    """ASL without comments or whitespace, to compare disassembly with what we meant."""
    return re.sub(r"\s+", "", re.sub(r"//[^\n]*|/\*.*?\*/", "", asl, flags=re.S))


def rsdp_source(rsdp):
    """The RSDP as iasl's data table source (the layout of `iasl -T RSDP`), checksums left 0
    for iasl to compute: iasl -d cannot read an RSDP file (its signature is not a table's)."""
    oem, revision, rsdt, length, xsdt = struct.unpack_from("<6sBIIQ", rsdp, 9)
    return "\n".join([
        '[0008] Signature : "RSD PTR "', "[0001] Checksum : 00", f'[0006] Oem ID : "{oem.decode()}"',
        f"[0001] Revision : {revision:02X}", f"[0004] RSDT Address : {rsdt:08X}",
        f"[0004] Length : {length:08X}", f"[0008] XSDT Address : {xsdt:016X}",
        "[0001] Extended Checksum : 00", "[0003] Reserved : 000000", ""])


@pytest.fixture(scope="module")
def acpica(tmp_path_factory):
    """name → (directory, {step: (rc, output)}): iasl and acpiexec run over every
    configuration at the first call, side by side (acpiexec takes a second each)."""
    results = {}

    def check(name, directory, iasl, acpiexec):
        steps = {}
        files = {sig: f"{sig.lower()}.dat" for sig in image(name).tables if sig != "RSDP"}
        for sig, file in files.items():
            (directory / file).write_bytes(image(name).tables[sig])
            steps[f"iasl -d {file}"] = run(iasl, "-d", file, cwd=directory)
            # -on: keep name paths as written (iasl would drop a redundant leading backslash)
            steps[f"iasl -on {sig.lower()}.dsl"] = run(iasl, "-on", "-p", f"re-{sig.lower()}", f"{sig.lower()}.dsl",
                                                       cwd=directory)
        (directory / "rsdp.asl").write_text(rsdp_source(image(name).tables["RSDP"]))
        steps["iasl rsdp.asl"] = run(iasl, "rsdp.asl", cwd=directory)
        loaded = [file for sig, file in files.items() if sig != "XSDT"]    # acpiexec makes its own RSDP and XSDT
        steps["acpiexec"] = run(acpiexec, "-b", ACPIEXEC_COMMANDS, *loaded, cwd=directory)
        return directory, steps

    def get(name):
        if not results:
            iasl, acpiexec = tool("iasl"), tool("acpiexec")
            # mktemp is not thread-safe (it resolves paths while siblings are being made)
            directories = {n: tmp_path_factory.mktemp(f"acpica-{n}") for n in CONFIGS}
            with ThreadPoolExecutor(len(CONFIGS)) as pool:
                runs = pool.map(lambda n: check(n, directories[n], iasl, acpiexec), CONFIGS)
                results.update(zip(CONFIGS, runs))
        return results[name]

    return get


@configs
def test_iasl_disassembles_and_recompiles_every_table(name, acpica):
    directory, steps = acpica(name)
    for step, (rc, output) in steps.items():
        if step.startswith("iasl"):
            assert rc == 0 and not problems(output), f"{step}:\n{output}"
            assert step.startswith("iasl -d") or CLEAN_COMPILE.search(output), f"{step}:\n{output}"
    for sig, table in image(name).tables.items():
        if sig == "RSDP":
            assert (directory / "rsdp.aml").read_bytes() == table     # iasl computed the same checksums
            continue
        dsl = (directory / f"{sig.lower()}.dsl").read_text()
        assert not problems(dsl.split("Raw Table Data")[0]), f"{sig}.dsl:\n{dsl}"
        recompiled = (directory / f"re-{sig.lower()}.aml").read_bytes()
        if sig == "APIC":
            table = without_x2apic_online_capable(table)
        # the same table but for iasl's own creator id and revision, and so its checksum
        assert recompiled[:9] + recompiled[10:28] + recompiled[36:] == table[:9] + table[10:28] + table[36:], sig
    dsdt = asl_code((directory / "dsdt.dsl").read_text())
    if CONFIGS[name].com1:
        assert asl_code("""Device (COM1) {
            Name (_HID, EisaId ("PNP0501")) Name (_UID, Zero) Name (_STA, 0x0F)
            Name (_CRS, ResourceTemplate () { IO (Decode16, 0x03F8, 0x03F8, 0x00, 0x08, ) IRQNoFlags () {4} }) }
            """) in dsdt
    assert asl_code('Device (PWRB) { Name (_HID, EisaId ("PNP0C0C")) Name (_UID, Zero) }') in dsdt
    assert asl_code("Name (\\_S5, Package (0x04) { 0x05, 0x05, Zero, Zero })") in dsdt
    apic = (directory / "apic.dsl").read_text()
    platform = CONFIGS[name]
    assert apic.count("Processor Enabled : 1") == platform.boot_cpus
    assert apic.count("Runtime Online Capable : 1") == min(platform.max_cpus, 255) - platform.boot_cpus


@configs
def test_acpiexec_loads_the_tables_cleanly(name, acpica):
    _, steps = acpica(name)
    rc, output = steps["acpiexec"]
    assert rc == 0 and not problems(output), output
    assert "ACPI: 1 ACPI AML tables successfully acquired and loaded" in output
    paths = set(re.findall(r"^\s*\d+\s+(\w+)\s+(\S+)\s*$", output, re.M))
    expected = {("Device", "_SB.PWRB"), ("Package", "_S5")}
    if CONFIGS[name].com1:
        expected |= {("Device", "_SB.COM1"), ("Buffer", "_SB.COM1._CRS")}
    if name == "pci-ged-mcfg":
        expected |= {("Device", "_SB.PCI0"), ("Method", "_SB.PCI0._STA"), ("Device", "_SB.GED")}
    assert expected <= paths, output
    assert re.search(r"\[Package\] Contains 4 Elements:\s*\[Integer\] = 0+5\s*\[Integer\] = 0+5\s*"
                     r"\[Integer\] = 0+\s*\[Integer\] = 0+\s", output), output
    if CONFIGS[name].com1:
        assert re.search(r"I/O Resource.*?Address Minimum : 03F8.*?Address Length : 08.*?IRQ Resource.*?"
                         r"Interrupt List : 4", output, re.S), output
