"""The ACPI Generic Event Device: its register (notify ORs flags in and pulses the
interrupt, a read returns them and clears them, from any number of threads), its AML
(the bytes iasl compiles from the same ASL), and ACPICA over whole tables with it in
the DSDT: iasl disassembles and recompiles them cleanly, and acpiexec loads them,
evaluates both _CRS and runs _EVT into each scan method and the power button."""

import re
import threading

import pytest

from plugvm.acpi import AcpiError, AcpiPlatform, build
from plugvm.acpi.aml import Device, EisaId, Method, Name, Scope
from plugvm.acpi.aml_extra import Arg, MethodCall, Store
from plugvm.acpi.ged_aml import event_device, ged_aml
from plugvm.layout import LayoutError, platform_area, platform_devices
from plugvm.acpi.platform_aml import power_button
from plugvm.devices.ged import (ALL_FLAGS, CPU_DEVICES_CHANGED, GED_SIZE, MEMORY_DEVICES_CHANGED,
                                PCI_DEVICES_CHANGED, POWER_BUTTON_CHANGED, Ged, GedError)
from plugvm.testing.acpica import CLEAN_COMPILE, check_round_trip, problems, run, run_over_tables, tool

ADDR, IRQ = 0xFEB0_0000, 13


class Pulses:
    """A raise_irq that counts its calls."""

    def __init__(self):
        self.count = 0
        self._lock = threading.Lock()

    def __call__(self):
        with self._lock:
            self.count += 1


def read(ged, offset=0, size=1):
    data = memoryview(bytearray(b"\xaa" * size))
    ged.read(offset, data)
    return bytes(data)


# --- The register

def test_flags_are_cloud_hypervisors():
    assert (CPU_DEVICES_CHANGED, MEMORY_DEVICES_CHANGED, PCI_DEVICES_CHANGED, POWER_BUTTON_CHANGED) == (1, 2, 4, 8)
    assert GED_SIZE == 1 and ALL_FLAGS == 0xF


def test_notify_ors_flags_in_and_pulses_each_time():
    pulses = Pulses()
    ged = Ged(pulses)
    assert read(ged) == b"\0" and pulses.count == 0
    ged.notify(CPU_DEVICES_CHANGED)
    assert pulses.count == 1 and ged.pending == 1
    ged.notify(PCI_DEVICES_CHANGED | POWER_BUTTON_CHANGED)
    ged.notify(CPU_DEVICES_CHANGED)
    assert pulses.count == 3 and ged.pending == 0xD


def test_a_read_returns_the_flags_and_clears_them():
    ged = Ged(Pulses())
    ged.notify(MEMORY_DEVICES_CHANGED)
    ged.notify(POWER_BUTTON_CHANGED)
    assert read(ged) == b"\x0a"
    assert read(ged) == b"\0" and ged.pending == 0


@pytest.mark.parametrize("offset, size", [(0, 2), (0, 4), (0, 8), (1, 1), (3, 1)])
def test_other_accesses_read_zeros_and_clear_nothing(offset, size):
    ged = Ged(Pulses())
    ged.notify(CPU_DEVICES_CHANGED)
    assert read(ged, offset, size) == bytes(size)
    assert ged.pending == CPU_DEVICES_CHANGED


def test_writes_are_ignored():
    ged = Ged(Pulses())
    ged.notify(PCI_DEVICES_CHANGED)
    ged.write(0, memoryview(bytearray(b"\x00")))
    ged.write(0, memoryview(bytearray(b"\xff")))
    assert read(ged) == b"\x04" and read(ged) == b"\0"


@pytest.mark.parametrize("flags", [0, 0x10, 0xFF, -1, True, 1.0, "1"])
def test_bad_flags_are_refused_without_an_interrupt(flags):
    pulses = Pulses()
    ged = Ged(pulses)
    with pytest.raises(GedError) as error:
        ged.notify(flags)
    assert isinstance(error.value, ValueError) and pulses.count == 0 and ged.pending == 0


def test_concurrent_notifies_lose_no_flag_and_no_pulse():
    """Four API threads notify their own bit while a vCPU thread keeps reading: every
    bit reaches the guest (in some read, or still pending), each notify pulses once,
    and the reads never see anything but flags."""
    pulses, rounds = Pulses(), 2000
    ged, seen, stop = Ged(pulses), [], threading.Event()

    def reader():
        while not stop.is_set():
            seen.append(read(ged)[0])

    def notifier(bit):
        for _ in range(rounds):
            ged.notify(bit)

    vcpu = threading.Thread(target=reader)
    vcpu.start()
    api = [threading.Thread(target=notifier, args=(1 << i,)) for i in range(4)]
    for thread in api:
        thread.start()
    for thread in api:
        thread.join()
    stop.set()
    vcpu.join()
    union = ged.pending
    for value in seen:
        assert value & ~ALL_FLAGS == 0
        union |= value
    assert union == ALL_FLAGS and pulses.count == 4 * rounds


def test_the_register_is_read_at_once_under_contention():
    """Reads take the whole byte and clear it in one step: with no reader racing, the
    flags notified between two reads all show up in the second and only there."""
    ged = Ged(Pulses())
    threads = [threading.Thread(target=ged.notify, args=(1 << (i % 4),)) for i in range(32)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert read(ged) == b"\x0f" and read(ged) == b"\0"


# --- The AML. Golden bytes for GED_ (the ASL beside them), and the whole fragment
# against what iasl compiles from the ASL in ged_aml's docstring.

GED_DEVICE_ASL = """Device (GED_) {
    Name (_HID, "ACPI0013")
    Name (_UID, Zero)
    Name (_CRS, ResourceTemplate () { Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) {13} })
    Method (_EVT, 1, Serialized) { \\_SB_.GEC_.ESCN () }
}"""
GED_DEVICE_HEX = ("5B82 45 04 4745445F"
                  " 08 5F484944 0D 4143504930303133 00"          # _HID "ACPI0013"
                  " 08 5F554944 00"                               # _UID Zero
                  " 08 5F435253 11 0E 0A0B 89 0600 03 01 0D000000 7900"   # Extended IRQ: consumer|edge, 1 GSI
                  " 14 15 5F455654 09 5C2F03 5F53425F 4745435F 4553434E")


def test_ged_device_golden_bytes():
    assert event_device(IRQ).to_bytes().hex(" ") == bytes.fromhex(GED_DEVICE_HEX).hex(" ")


def stub_scans():
    """The three scan methods ESCN may call; each sets its device's HIT_ to 1."""
    stubs = [Device(dev, Name("_HID", EisaId("PNP0A06")), Name("HIT_", 0), Method(scan, 0, Store(1, "HIT_")))
             for dev, scan in [("CPUS", "CSCN"), ("MHPC", "MSCN"), ("PHPR", "PSCN")]]
    return Scope("\\_SB_", *stubs)


STUB_ASL = "\n".join(f'Device ({dev}) {{ Name (_HID, EisaId ("PNP0A06")) Name (HIT_, Zero) '
                     f"Method ({scan}, 0) {{ HIT_ = One }} }}"
                     for dev, scan in [("CPUS", "CSCN"), ("MHPC", "MSCN"), ("PHPR", "PSCN")])


def ged_asl(cpus, memory, pci):
    scans = [(1, cpus, "\\_SB_.CPUS.CSCN ()"), (2, memory, "\\_SB_.MHPC.MSCN ()"), (4, pci, "\\_SB_.PHPR.PSCN ()")]
    tests = "".join(f"Local1 = (Local0 & {bit})\nIf ((Local1 == {bit})) {{ {call} }}\n"
                    for bit, present, call in scans if present)
    return f"""Scope (\\_SB_) {{
Device (GEC_) {{
    Name (_HID, EisaId ("PNP0A06"))
    Name (_UID, "Generic Event Controller")
    Name (_CRS, ResourceTemplate () {{
        QWordMemory (ResourceConsumer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite,
                     0x0, 0xFEB00000, 0xFEB00000, 0x0, 0x1)
    }})
    OperationRegion (GDST, SystemMemory, 0xFEB00000, 0x01)
    Field (GDST, ByteAcc, NoLock, WriteAsZeros) {{ GDAT, 8 }}
    Method (ESCN, 0, Serialized) {{
        Local0 = GDAT
        {tests}
        Local1 = (Local0 & 0x08)
        If ((Local1 == 0x08)) {{ Notify (\\_SB_.PWRB, 0x80) }}
    }}
}}
{GED_DEVICE_ASL}
}}"""


VARIANTS = {"power-button": {}, "all-scans": {"cpus": True, "memory": True, "pci": True},
            "cpus-only": {"cpus": True}}


@pytest.mark.parametrize("variant", VARIANTS)
def test_iasl_compiles_the_asl_to_the_same_bytes(variant, tmp_path):
    flags = {"cpus": False, "memory": False, "pci": False, **VARIANTS[variant]}
    asl = ('DefinitionBlock ("", "SSDT", 2, "CLOUDH", "GOLDEN", 1)\n{\n'
           'Scope (\\_SB_) { Device (PWRB) { Name (_HID, EisaId ("PNP0C0C")) Name (_UID, Zero) } }\n'
           f'{ged_asl(**flags)}\nScope (\\_SB_) {{\n{STUB_ASL}\n}}\n}}\n')
    (tmp_path / "golden.asl").write_text(asl)
    rc, output = run(tool("iasl"), "-on", "-p", "golden", "golden.asl", cwd=tmp_path)
    assert rc == 0 and CLEAN_COMPILE.search(output), output
    ours = [Scope("\\_SB_", power_button()), *ged_aml(ADDR, IRQ, **flags), stub_scans()]
    assert (tmp_path / "golden.aml").read_bytes()[36:].hex(" ") == b"".join(o.to_bytes() for o in ours).hex(" ")


def test_escn_calls_only_the_scans_that_exist():
    names = {"cpus": b"CSCN", "memory": b"MSCN", "pci": b"PSCN"}
    for present in names:
        aml = b"".join(o.to_bytes() for o in ged_aml(ADDR, IRQ, **{present: True}))
        assert [name for name in names.values() if name in aml] == [names[present]]
    assert b"PWRB" in b"".join(o.to_bytes() for o in ged_aml(ADDR, IRQ))


@pytest.mark.parametrize("make", [lambda: ged_aml(-1, IRQ), lambda: ged_aml(1 << 64, IRQ)])
def test_bad_arguments_are_refused(make):
    with pytest.raises(AcpiError):
        make()


@pytest.mark.parametrize("phys_bits", [31, 53])
def test_a_platform_area_outside_32_to_52_bits_is_refused(phys_bits):
    with pytest.raises(LayoutError):
        platform_area(phys_bits)


def test_the_platform_area_is_the_mib_below_the_top_64_kib():
    assert platform_area(40) == ((1 << 40) - 0x11_0000, 0x10_0000)
    assert platform_area(46) == (0x3FFF_FFEF_0000, 1 << 20)


def test_platform_devices_are_allocated_top_down_a_page_each_in_cloud_hypervisors_order():
    top = (1 << 40) - 0x1_0000
    assert platform_devices(40) == {"pci_hotplug": top - 0x1000, "cpu_hotplug": top - 0x2000, "ged": top - 0x3000}
    assert platform_devices(40, ("memory_hotplug", "ged")) == {"memory_hotplug": top - 0x1000, "ged": top - 0x2000}
    with pytest.raises(LayoutError):
        platform_devices(40, tuple(str(i) for i in range(257)))


# --- ACPICA over the whole tables

def tables(variant):
    flags = VARIANTS[variant]
    # TGED (flags) plays the VMM and the OS: it sets the register (acpiexec simulates
    # the region, which keeps what was written) and runs the handler as for IRQ 13.
    trigger = Method("\\TGED", 1, Store(Arg(0), "\\_SB_.GEC_.GDAT"), MethodCall("\\_SB_.GED_._EVT", IRQ))
    fragments = [*ged_aml(ADDR, IRQ, **flags), *([stub_scans()] if flags else []), trigger]
    return {sig: t for sig, t in build(AcpiPlatform(boot_cpus=1, max_cpus=1,
                                                    dsdt_fragments=tuple(fragments))).tables.items() if sig != "RSDP"}


@pytest.fixture(scope="module", params=["power-button", "all-scans"])
def acpica(request, tmp_path_factory):
    """(variant, directory, {step: (rc, output)}) after iasl and acpiexec ran over its tables."""
    variant, directory = request.param, tmp_path_factory.mktemp(f"ged-{request.param}")
    commands = ["Paths", "Predefined", "Resources", r"Evaluate \_SB_.GED_._CRS", r"Evaluate \_SB_.GEC_._CRS",
                r"Evaluate \_SB_.GED_._EVT 0", r"Evaluate \TGED 0x8"]
    hits = [rf"Evaluate \_SB_.{dev}.HIT_" for dev in ("CPUS", "MHPC", "PHPR")] if VARIANTS[variant] else []
    commands += hits + [r"Evaluate \TGED 0x7"] + hits
    return variant, directory, run_over_tables(tables(variant), directory, commands)


def test_iasl_disassembles_every_table_and_recompiles_the_dsdt(acpica):
    variant, directory, steps = acpica
    check_round_trip(tables(variant), directory, steps)


def test_acpiexec_evaluates_the_resources_and_runs_the_handler(acpica):
    variant, _, steps = acpica
    rc, output = steps["acpiexec"]
    assert rc == 0 and not problems(output), output
    paths = set(re.findall(r"^\s*\d+\s+(\w+)\s+(\S+)\s*$", output, re.M))
    assert {("Device", "_SB.GEC"), ("Method", "_SB.GEC.ESCN"), ("Device", "_SB.GED"),
            ("Method", "_SB.GED._EVT"), ("Device", "_SB.PWRB")} <= paths, output
    for path in (r"\_SB_.GED_._CRS", r"\_SB_.GEC_._CRS"):
        assert f"Evaluation of {path} returned object" in output, path
    for path in (r"\_SB_.GED_._EVT", r"\TGED"):      # methods that return nothing
        assert f"No object was returned from evaluation of {path}\n" in output, path
    # ACPICA's resource manager decodes GED_'s interrupt and GEC_'s register
    assert re.search(r"Extended IRQ Resource\s+Type : ResourceConsumer\s+Triggering : Edge\s+"
                     r"Polarity : ActiveHigh\s+Sharing : Exclusive\s.*?Dword00 : 0000000D\s", output, re.S), output
    assert re.search(r"Address Minimum : 00000000FEB00000\s+Address Maximum : 00000000FEB00000", output), output
    # _EVT 0 read a zero register and did nothing; TGED 0x8 pressed the power button and
    # scanned nothing; TGED 0x7 ran every scan and did not press the button again
    assert len(re.findall(r"Notify.*PWRB.*Value 0x80", output, re.I)) == 1, output
    hits = re.findall(r"Evaluation of \\_SB_\.(\w+)\.HIT_ returned.*\n\s*\[Integer\] = (\w+)", output)
    expected = [(dev, bit) for bit in (0, 1) for dev in ("CPUS", "MHPC", "PHPR")] if VARIANTS[variant] else []
    assert [(dev, int(v, 16)) for dev, v in hits] == expected, output
