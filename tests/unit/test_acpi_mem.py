"""plugvm-acpi-mem's pure parts: the memory hotplug registers as a hostile guest drives
them, the method's resize rules on a real GuestMemory, and its DSDT fragment under
ACPICA (iasl round trip; acpiexec evaluates _STA, _CRS and the scan through the GED).

acpiexec simulates the register block as plain memory: the selector (MSEL, offset 0)
and the base's low half (MHBL) are the same four bytes there, so a _CRS evaluated in
acpiexec has the slot number as its base's low half. The tests say where they rely on it."""

import re
import threading
from collections import Counter
from dataclasses import replace

import pytest
from plugvm_acpi_mem import AcpiMemoryMethod, MemoryHotplugRegisters
from plugvm_acpi_mem.aml import dimm_name, memory_hotplug_aml
from plugvm_acpi_mem.registers import ENABLED, EJECT, INSERTING, REGISTERS_SIZE

from plugvm.acpi import AcpiPlatform, build
from plugvm.acpi.aml import Method
from plugvm.acpi.aml_extra import Arg, Field, FieldAccess, MethodCall, Store
from plugvm.acpi.ged_aml import ged_aml
from plugvm.config import MemoryConfig
from plugvm.config.errors import ConfigError, Where
from plugvm.layout import MEMORY_HOTPLUG, PLATFORM_DEVICES, platform_devices
from plugvm.memory import GuestMemory
from plugvm.memory_hotplug import MemoryHotplugEnv, ResizeRefused

MiB, GiB = 1 << 20, 1 << 30
PLATFORM = platform_devices(40, (MEMORY_HOTPLUG,) + PLATFORM_DEVICES)
MEM_REGS, GED_REG, GED_IRQ = PLATFORM[MEMORY_HOTPLUG], PLATFORM["ged"], 13


def rd(regs, offset, size):
    data = memoryview(bytearray(size))
    regs.read(offset, data)
    return int.from_bytes(data, "little")


def wr(regs, offset, value, size):
    regs.write(offset, memoryview(bytearray(value.to_bytes(size, "little"))))


# --- the registers -------------------------------------------------------------------------------

def test_platform_area_puts_the_memory_registers_first_as_cloud_hypervisor():
    plain = platform_devices(40)
    assert PLATFORM[MEMORY_HOTPLUG] == plain["pci_hotplug"]          # the top page
    assert PLATFORM["ged"] == plain["ged"] - 0x1000


def test_an_inserted_dimm_reads_back_through_the_selector_and_is_taken_once_its_range_is_read():
    regs = MemoryHotplugRegisters()
    taken = regs.insert(2, 0x1_2000_0000, 0x4000_0000)
    wr(regs, 0x0, 2, 4)
    assert rd(regs, 0x14, 1) == ENABLED | INSERTING
    assert (rd(regs, 0x0, 4), rd(regs, 0x4, 4), rd(regs, 0x8, 4), rd(regs, 0xC, 4)) == (0x2000_0000, 1,
                                                                                          0x4000_0000, 0)
    assert not taken.is_set()                   # read before the scan's ack: not the guest's _CRS
    wr(regs, 0x14, INSERTING, 1)                # MINS = 1: the scan acks
    assert rd(regs, 0x14, 1) == ENABLED
    rd(regs, 0xC, 4)
    assert taken.is_set()
    wr(regs, 0x0, 1, 4)                         # another slot: empty
    assert rd(regs, 0x14, 1) == 0 and rd(regs, 0x0, 4) == 0


@pytest.mark.parametrize("access", [
    ("read", 0x0, 2), ("read", 0x0, 8), ("read", 0x10, 4), ("read", 0x14, 4), ("read", 0x3, 1),
    ("write", 0x14, 4), ("write", 0x4, 4), ("write", 0x0, 1), ("write", 0x8, 8), ("write", 0x16, 1)])
def test_odd_accesses_read_zero_and_change_nothing(access):
    regs = MemoryHotplugRegisters()
    regs.insert(0, 0x1_0000_0000, 128 * MiB)
    kind, offset, size = access
    if kind == "read":
        assert rd(regs, offset, size) == 0
    else:
        wr(regs, offset, 0xFFFF_FFFF_FFFF_FFFF & ((1 << 8 * size) - 1), size)
    assert rd(regs, 0x14, 1) == ENABLED | INSERTING and rd(regs, 0x4, 4) == 1 and rd(regs, 0x8, 4) == 128 * MiB


def test_a_selector_past_the_slots_and_an_eject_are_ignored():
    regs = MemoryHotplugRegisters()
    regs.insert(7, 0x2_0000_0000, 128 * MiB)
    wr(regs, 0x0, 0x1_07, 4)                    # byte 0 is the selector: slot 7
    assert rd(regs, 0x14, 1) == ENABLED | INSERTING
    wr(regs, 0x14, EJECT, 1)                    # not supported: nothing goes
    assert rd(regs, 0x14, 1) == ENABLED | INSERTING
    wr(regs, 0x0, 200, 4)
    assert rd(regs, 0x14, 1) == 0 and rd(regs, 0x8, 4) == 0
    wr(regs, 0x14, INSERTING, 1)                # no slot selected: nothing acked
    wr(regs, 0x0, 7, 4)
    assert rd(regs, 0x14, 1) == ENABLED | INSERTING


# --- the method ----------------------------------------------------------------------------------

class Env:
    """A MemoryHotplugEnv on a real GuestMemory, recording what the method asks of the core."""

    def __init__(self, size=512 * MiB, hotplug_size=2 * GiB, fail_add=False):
        self.config = MemoryConfig(size=size, hotplug_size=hotplug_size)
        self.memory = GuestMemory(size)
        self.method = AcpiMemoryMethod()
        self.window = self.method.reserve(self.memory.boot_end, self.config)
        self.added, self.notified, self.fail_add = [], 0, fail_add
        self.env = MemoryHotplugEnv(memory=self.memory, config=self.config, window=self.window,
                                    registers_addr=MEM_REGS, add_region=self.add_region, notify_guest=self.notify)
        self.hotplug = self.method.attach(self.env)

    def add_region(self, addr, size):
        if self.fail_add:
            from plugvm.memory import GuestMemoryAllocationError
            raise GuestMemoryAllocationError("no memory")
        region = self.memory.add_region(addr, size)
        self.added.append((addr, size))
        return region

    def notify(self):
        self.notified += 1


@pytest.fixture
def env():
    e = Env()
    yield e
    e.memory.close()


def test_the_window_starts_at_4g_below_3g_of_boot_ram_else_after_it_aligned():
    method = AcpiMemoryMethod()
    assert method.reserve(512 * MiB, MemoryConfig(hotplug_size=2 * GiB)).start == 4 * GiB
    assert method.reserve(3 * GiB, MemoryConfig(size=3 * GiB, hotplug_size=GiB)).start == 4 * GiB
    # 3.5 GiB of boot RAM ends at 4.5 GiB; 3 GiB + 100 MiB ends at 4 GiB + 100 MiB → 4 GiB + 128 MiB
    assert method.reserve(4 * GiB + 512 * MiB, MemoryConfig(hotplug_size=GiB)).start == 4 * GiB + 512 * MiB
    assert method.reserve(4 * GiB + 100 * MiB, MemoryConfig(hotplug_size=GiB)).start == 4 * GiB + 128 * MiB
    assert method.reserve(512 * MiB, MemoryConfig(hotplug_size=100 * MiB)).size == 128 * MiB


def test_growing_adds_one_dimm_per_resize_after_the_last(env):
    resized = env.hotplug.resize(GiB)
    assert env.added == [(4 * GiB, 512 * MiB)] and env.notified == 1
    assert resized.config == replace(env.config, size=GiB) and not resized.done.is_set()
    assert env.hotplug.actual_size() == GiB
    env.hotplug.resize(2 * GiB)
    assert env.added[1] == (4 * GiB + 512 * MiB, GiB)
    wr(env.hotplug.registers, 0x0, 1, 4)
    assert rd(env.hotplug.registers, 0x0, 4) == 512 * MiB and rd(env.hotplug.registers, 0x4, 4) == 1
    assert env.memory.read(4 * GiB + 512 * MiB + 4096, 4) == bytes(4)      # reachable guest RAM
    # the whole window can be used (cloud-hypervisor's #1803)
    env.hotplug.resize(2 * GiB + 512 * MiB)
    assert env.hotplug.actual_size() == 2 * GiB + 512 * MiB


def test_shrinking_is_recorded_for_the_next_boot_and_takes_nothing_away(env):
    env.hotplug.resize(2 * GiB)
    resized = env.hotplug.resize(GiB)
    assert resized.config.size == GiB and resized.done.is_set()
    assert env.hotplug.actual_size() == 2 * GiB and len(env.added) == 1
    again = env.hotplug.resize(2 * GiB)                 # back to what the guest has: nothing to add
    assert again.config.size == 2 * GiB and len(env.added) == 1


@pytest.mark.parametrize("desired, words", [
    (GiB + MiB, ["desired_ram=", "128 MiB"]),
    (512 * MiB + 64 * MiB, ["not a multiple of 128 MiB"]),
    (2 * GiB + 640 * MiB, ["past the memory hotplug window", str(512 * MiB + 2 * GiB)]),
])
def test_refused_sizes_change_nothing(env, desired, words):
    with pytest.raises(ResizeRefused) as e:
        env.hotplug.check_resize(desired)
    with pytest.raises(ResizeRefused):
        env.hotplug.resize(desired)
    assert all(w in str(e.value) for w in words), str(e.value)
    assert env.added == [] and env.notified == 0 and env.hotplug.actual_size() == 512 * MiB


def test_a_ninth_dimm_is_refused(env):
    for i in range(8):
        env.hotplug.resize(512 * MiB + (i + 1) * 128 * MiB)
    with pytest.raises(ResizeRefused, match="all 8 memory hotplug slots"):
        env.hotplug.resize(512 * MiB + 9 * 128 * MiB)
    assert len(env.added) == 8 and env.hotplug.actual_size() == 512 * MiB + 8 * 128 * MiB


def test_a_host_failure_is_a_typed_error_and_adds_nothing():
    from plugvm.memory_hotplug import MemoryHotplugError
    e = Env(fail_add=True)
    try:
        with pytest.raises(MemoryHotplugError, match="could not add"):
            e.hotplug.resize(GiB)
        assert e.hotplug.actual_size() == 512 * MiB and e.notified == 0
    finally:
        e.memory.close()


def test_hotplugged_size_is_refused_for_acpi():
    with pytest.raises(ConfigError, match="hotplugged_size is only valid with virtio-mem"):
        AcpiMemoryMethod().validate(MemoryConfig(hotplug_size=GiB, hotplugged_size=GiB), Where("--memory"))


# --- the AML under ACPICA ------------------------------------------------------------------------

def test_bad_addresses_are_refused():
    from plugvm.acpi import AcpiError
    with pytest.raises(AcpiError):
        memory_hotplug_aml(1 << 64)
    assert dimm_name(7) == "M007" and dimm_name(12) == "M012"


def tables():
    helpers = [Field("\\_SB_.MHPC.MHPR", [(None, 0x14 * 8), ("TSTS", 8)], access=FieldAccess.BYTE),
               Method("\\TSET", 1, Store(Arg(0), "\\TSTS")),
               Method("\\TREG", 3, Store(Arg(0), "\\_SB_.MHPC.MHBH"), Store(Arg(1), "\\_SB_.MHPC.MHLL"),
                      Store(Arg(2), "\\_SB_.MHPC.MHLH")),
               Method("\\TGED", 0, Store(2, "\\_SB_.GEC_.GDAT"), MethodCall("\\_SB_.GED_._EVT", GED_IRQ))]
    fragments = (*ged_aml(GED_REG, GED_IRQ, memory=True), *memory_hotplug_aml(MEM_REGS), *helpers)
    image = build(AcpiPlatform(boot_cpus=1, max_cpus=1, dsdt_fragments=fragments))
    return {sig: t for sig, t in image.tables.items() if sig != "RSDP"}


COMMANDS = ["Paths", "Predefined", "Resources",
            r"Evaluate \_SB_.MHPC.M003._STA",                        # nothing enabled: 0
            r"Evaluate \TSET 1", r"Evaluate \_SB_.MHPC.M003._STA",    # MEN_: 0xF
            r"Evaluate \TREG 1 0x8000000 0", r"Evaluate \_SB_.MHPC.M003._CRS",
            r"Evaluate \TSET 0", r"Evaluate \_SB_.MHPC.MSCN",         # nothing inserting: no Notify
            r"Evaluate \TSET 3", r"Evaluate \TGED", r"Evaluate \TSTS"]


@pytest.fixture(scope="module")
def acpica(tmp_path_factory):
    from plugvm.testing.acpica import run_over_tables
    directory = tmp_path_factory.mktemp("mem")
    return directory, run_over_tables(tables(), directory, COMMANDS)


def test_iasl_disassembles_and_recompiles_the_tables(acpica):
    from plugvm.testing.acpica import check_round_trip
    directory, steps = acpica
    check_round_trip(tables(), directory, steps)


def test_acpiexec_reads_each_dimms_status_and_range_and_scans_through_the_ged(acpica):
    from plugvm.testing.acpica import problems
    _, steps = acpica
    rc, output = steps["acpiexec"]
    assert rc == 0 and not problems(output), output
    paths = set(re.findall(r"^\s*\d+\s+(\w+)\s+(\S+)\s*$", output, re.M))
    expected = {("Device", "_SB.MHPC"), ("Mutex", "_SB.MHPC.MLCK"), ("Region", "_SB.MHPC.MHPR"),
                *[("Method", f"_SB.MHPC.{m}") for m in ("MTFY", "MSCN", "MSTA", "MCRS")],
                *[("Device", f"_SB.MHPC.M00{i}") for i in range(8)]}
    assert expected <= paths, sorted(expected - paths)
    assert ("Device", "_SB.MHPC.M008") not in paths
    found = [int(v, 16) for v in re.findall(r"Evaluation of \\_SB_.MHPC.M003._STA returned.*\n\s*\[Integer\] = (\w+)",
                                            output)]
    assert found == [0, 0xF]
    # _CRS: base (MHBH << 32 | MHBL, which is the selector 3 in acpiexec), length, max = base + length - 1
    base, length = (1 << 32) | 3, 0x8000000
    dump = re.search(r"Evaluation of \\_SB_.MHPC.M003._CRS returned.*\n\s*\[Buffer\] Length (\w+) =\s*\n"
                     r"((?:\s+[0-9A-F]{4}: (?:[0-9A-F]{2} )+.*\n)+)", output)
    assert dump, output
    data = bytes.fromhex("".join(line.split(":")[1].split("//")[0] for line in dump[2].splitlines()))
    assert len(data) == int(dump[1], 16) == 0x30
    field = lambda at: int.from_bytes(data[at:at + 8], "little")
    assert data[0] == 0x8A and data[3] == 0                               # QWord address space, memory range
    assert (field(14), field(22), field(38)) == (base, base + length - 1, length)
    # the registers' own window, as the controller's _CRS says
    assert re.search(rf"Address Minimum : {MEM_REGS:016X}\s+Address Maximum : {MEM_REGS + REGISTERS_SIZE - 1:016X}",
                     output), output
    # the scan through the GED: with MINS set every slot (plain memory) gets Device Check, once
    notifies = Counter(re.findall(r"Received a System Notify on \[(\w+)\] \w+ Value 0x(\w+)", output))
    assert notifies == Counter({(dimm_name(i), "01"): 1 for i in range(8)}), output
    # MINS = 1 wrote only its bit (WriteAsZeros): MEN_ is not written back
    assert re.findall(r"Evaluation of \\TSTS returned.*\n\s*\[Integer\] = (\w+)", output) == ["0000000000000002"]
