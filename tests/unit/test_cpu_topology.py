"""`--cpus topology=T:C:D:P` as the guest sees it: the APIC ids (plugvm.cpu.topology,
cloud-hypervisor's bit fields), the CPUID leaves of one vCPU on an Intel and on an
AMD host, what a 6.1 Linux guest derives from them, and the MADT and the CPUs' _MAT
carrying the same APIC ids."""

import struct

import pytest
from hypothesis import given, strategies as st

from plugvm.acpi import AcpiError, AcpiPlatform, build
from plugvm.acpi.cpu_aml import cpu_hotplug_aml
from plugvm.acpi.madt import Madt, processor_entry
from plugvm.acpi.madt_entries import ENABLED, ONLINE_CAPABLE
from plugvm.config.cpus import CpusConfig
from plugvm.cpu import cpuid
from plugvm.cpu.topology import Topology, field_width
from plugvm.layout import platform_devices


# --- APIC ids ---------------------------------------------------------------------------------

@pytest.mark.parametrize("topology, ids", [
    ((1, 4, 1, 1), [0, 1, 2, 3]),                       # the default shape: ids are the indexes
    ((2, 2, 1, 2), [0, 1, 2, 3, 4, 5, 6, 7]),           # thread bit 0, core bit 1, package bit 2
    ((2, 3, 1, 1), [0, 1, 2, 3, 4, 5]),                 # three cores take two bits...
    ((2, 3, 1, 2), [0, 1, 2, 3, 4, 5, 8, 9, 10, 11, 12, 13]),   # ...so package 1 starts at 8
    ((1, 2, 2, 2), [0, 1, 2, 3, 4, 5, 6, 7]),           # core bit 0, die bit 1, package bit 2
    ((1, 3, 3, 1), [0, 1, 2, 4, 5, 6, 8, 9, 10]),       # a die of three cores spans four ids
    ((1, 1, 1, 4), [0, 1, 2, 3]),                       # single-core packages: widths 0
])
def test_apic_ids_pack_thread_core_die_and_package(topology, ids):
    topo = Topology(*topology)
    assert topo.apic_ids(topo.per_package * topo.packages) == tuple(ids)


def test_cloud_hypervisors_own_examples():
    """arch/src/x86_64/mod.rs test_get_x2apic_id."""
    assert [Topology(2, 3, 1, 1).apic_id(i) for i in (0, 1, 2, 6, 7, 8)] == [0, 1, 2, 8, 9, 10]
    assert Topology(1, 312, 1, 1).apic_id(257) == 257
    assert Topology(1, 256, 1, 1).apic_id(255) == 255


def test_without_a_topology_or_with_the_default_one_ids_are_indexes():
    for topology in (None, CpusConfig.parse("boot=2,max=6,topology=1:6:1:1").topology):
        topo = Topology.of(topology, 6)
        assert topo == Topology(1, 6, 1, 1) and topo.apic_ids(6) == tuple(range(6))


def test_place_and_shifts():
    topo = Topology.of(CpusConfig.parse("boot=1,max=24,topology=2:3:2:2").topology, 24)
    assert (topo.core_shift, topo.die_shift, topo.package_shift) == (1, 3, 4)
    assert (topo.per_core, topo.per_die, topo.per_package) == (2, 6, 12)
    assert topo.place(0) == (0, 0, 0, 0) and topo.place(7) == (1, 0, 1, 0) and topo.place(23) == (1, 2, 1, 1)
    assert topo.apic_id(7) == 0b1001 and topo.apic_id(23) == 0b11101


topologies = st.tuples(st.integers(1, 2), st.integers(1, 12), st.integers(1, 4), st.integers(1, 4))


@given(topologies)
def test_every_cpu_gets_its_own_id_and_the_fields_decode_back(t):
    topo = Topology(*t)
    count = topo.per_package * topo.packages
    ids = topo.apic_ids(count)
    assert len(set(ids)) == count and ids == tuple(sorted(ids))
    for index, apic_id in enumerate(ids):
        fields = (apic_id & (1 << topo.core_shift) - 1,
                  apic_id >> topo.core_shift & (1 << field_width(topo.cores_per_die)) - 1,
                  apic_id >> topo.die_shift & (1 << field_width(topo.dies_per_package)) - 1,
                  apic_id >> topo.package_shift)
        assert fields == topo.place(index)


# --- CPUID ------------------------------------------------------------------------------------

def regs(vendor: bytes, max_leaf: int) -> tuple:
    """Leaf 0 for a vendor string: EAX max leaf, EBX EDX ECX the string."""
    b, d, c = (int.from_bytes(vendor[i:i + 4], "little") for i in (0, 4, 8))
    return (0, 0, 0, max_leaf, b, c, d)


def cache(level: int, sharing: int, core_ids: int = 0) -> int:
    """A leaf 4 / 0x8000_001D EAX: a data or unified cache at this level."""
    kind = 1 if level == 1 else 3
    return core_ids << 26 | sharing << 14 | level << 5 | kind


INTEL = [regs(b"GenuineIntel", 0x1F), (1, 0, 0, 0x806F8, 0x00010800, 0, 0),
         (4, 0, 1, cache(1, 1, 31), 0, 0, 0), (4, 1, 1, cache(2, 1, 31), 0, 0, 0),
         (4, 2, 1, cache(3, 63, 31), 0, 0, 0), (4, 3, 1, 0, 0, 0, 0),
         (0xB, 0, 1, 1, 2, 0x100, 0), (0xB, 1, 1, 6, 64, 0x201, 0), (0xB, 2, 1, 0, 0, 2, 0),
         (0x8000_0008, 0, 0, 0x3030, 0, 0, 0),
         (0x4000_0000, 0, 0, 0x4000_0001, 0x4B4D564B, 0x564B4D56, 0x4D)]
AMD = [regs(b"AuthenticAMD", 0x10), (1, 0, 0, 0x830F10, 0x00010800, 0, 0),
       (0x8000_0001, 0, 0, 0, 0, 0x75C237FF, 0), (0x8000_0008, 0, 0, 0x3030, 0, 0x7007, 0),
       (0x8000_001D, 0, 1, cache(1, 1), 0, 0, 0), (0x8000_001D, 1, 1, cache(3, 15), 0, 0, 0),
       (0x8000_001D, 2, 1, 0, 0, 0, 0), (0x8000_001E, 0, 0, 0, 0, 0, 0)]


def leaf(table, function, index=0):
    found = [e[3:] for e in table if e[:2] == (function, index)]
    assert len(found) == 1, (hex(function), index, found)
    return found[0]


def linux_topology(table):
    """(core_id, die_id, package_id, threads per core) as Linux 6.1's
    detect_extended_topology() derives them: 0x1F if the max leaf reaches it, else 0xB;
    the shift of each level's EAX, the APIC id in EDX."""
    top = 0x1F if leaf(table, 0)[0] >= 0x1F else 0xB
    eax, ebx, ecx, apic_id = leaf(table, top, 0)
    assert ecx >> 8 & 0xFF == 1 and ebx                     # check_extended_topology_leaf
    ht = core_plus = die_plus = eax & 0x1F
    siblings, index = ebx & 0xFFFF, 1
    while (level := leaf(table, top, index))[2] >> 8 & 0xFF:
        if level[2] >> 8 & 0xFF == 2:
            core_plus = die_plus = level[0] & 0x1F
        if level[2] >> 8 & 0xFF == 5:
            die_plus = level[0] & 0x1F
        assert level[3] == apic_id and level[2] & 0xFF == index
        index += 1
    core = apic_id >> ht & (1 << core_plus - ht) - 1
    die = apic_id >> core_plus & (1 << die_plus - core_plus) - 1
    return core, die, apic_id >> die_plus, siblings


def test_intel_vcpu_leaves():
    topo = Topology(2, 3, 1, 2)
    apic_id = topo.apic_id(7)                           # thread 1 of core 0 in package 1
    assert apic_id == 9
    table = cpuid.for_vcpu(INTEL, apic_id, 12, topo)
    ebx = leaf(table, 1)[1]
    assert ebx >> 24 == 9 and ebx >> 16 & 0xFF == 6 and ebx & 0xFFFF == 0x0800   # APIC id, per package
    assert leaf(table, 1)[3] & cpuid.HTT_BIT and leaf(table, 1)[2] & cpuid.HYPERVISOR_BIT
    assert [leaf(table, 0xB, i) for i in range(3)] == [(1, 2, 0x100, 9), (3, 6, 0x201, 9), (0, 0, 2, 9)]
    assert [leaf(table, 0x1F, i) for i in range(4)] == [(1, 2, 0x100, 9), (3, 6, 0x201, 9), (3, 6, 0x502, 9),
                                                       (0, 0, 3, 9)]
    # Caches: L1 and L2 shared by the core's two threads, L3 by the die's 8 ids; 4 core ids.
    assert [leaf(table, 4, i)[0] for i in range(3)] == [cache(1, 1, 3), cache(2, 1, 3), cache(3, 7, 3)]
    assert leaf(table, 0x8000_0008) == (0x3030, 0, 0, 0)   # AMD's ApicIdSize field is reserved on Intel
    assert leaf(table, 0x4000_0000) == INTEL[-1][3:]        # KVM's own leaves pass through
    assert (0x8000_001E, 0) not in {e[:2] for e in table}
    assert linux_topology(table) == (0, 0, 1, 2)


def test_amd_vcpu_leaves():
    topo = Topology(2, 3, 2, 1)
    apic_id = topo.apic_id(7)                           # thread 1 of core 0 on die 1
    assert apic_id == 0b1001
    table = cpuid.for_vcpu(AMD, apic_id, 12, topo)
    assert leaf(table, 1)[1] >> 16 & 0xFF == 12 and leaf(table, 1)[1] >> 24 == 9
    assert leaf(table, 0x8000_0001)[2] == 0x75C237FF | cpuid.CMP_LEGACY_BIT | cpuid.TOPOEXT_BIT
    assert leaf(table, 0x8000_0008)[2] == 0x400B         # ApicIdSize 4, NC = 12 - 1
    # Extended APIC id; core 4 in the package (die 1's first), 2 threads; node 1 of 2.
    assert leaf(table, 0x8000_001E) == (9, 0x104, 0x101, 0)
    assert [leaf(table, 0x8000_001D, i)[0] for i in range(2)] == [cache(1, 1), cache(3, 7)]
    # The max leaf is 0x10: the guest reads 0xB, whose core level holds the whole package.
    assert leaf(table, 0xB, 1) == (4, 12, 0x201, 9)
    assert linux_topology(table) == (0b100, 0, 0, 2)


def test_amd_with_one_logical_processor_per_package_sets_no_multicore_bits():
    table = cpuid.for_vcpu(AMD, 3, 4, Topology(1, 1, 1, 4))
    assert leaf(table, 0x8000_0001)[2] == 0x75C237FF and not leaf(table, 1)[3] & cpuid.HTT_BIT
    assert leaf(table, 0x8000_0008)[2] == 0 and linux_topology(table) == (0, 0, 3, 1)


@pytest.mark.parametrize("topology, expected", [
    ("2:2:1:1", [(0, 0, 0), (0, 0, 0), (1, 0, 0), (1, 0, 0)]),
    ("2:2:1:2", [(0, 0, 0), (0, 0, 0), (1, 0, 0), (1, 0, 0), (0, 0, 1), (0, 0, 1), (1, 0, 1), (1, 0, 1)]),
    ("1:2:2:2", [(0, 0, 0), (1, 0, 0), (0, 1, 0), (1, 1, 0), (0, 0, 1), (1, 0, 1), (0, 1, 1), (1, 1, 1)]),
])
def test_what_linux_derives_on_intel(topology, expected):
    config = CpusConfig.parse(f"boot=1,max={len(expected)},topology={topology}")
    topo = Topology.of(config.topology, config.max_vcpus)
    seen = [linux_topology(cpuid.for_vcpu(INTEL, topo.apic_id(i), config.max_vcpus, topo))[:3]
            for i in range(config.max_vcpus)]
    assert seen == expected


def test_no_topology_is_what_plugvm_gave_before():
    """max_vcpus single-threaded cores in one package: the old leaves 1 and 0xB."""
    old = [(1, 0, 0, 0x306A9, 0x00010800, 0, 0), (0xB, 0, 1, 0, 0, 0, 0), (0xB, 1, 1, 0, 0, 0, 0)]
    table = cpuid.for_vcpu(old, 5, 8)
    assert table[0][4] >> 24 == 5 and table[0][4] >> 16 & 0xFF == 8
    assert table[1][3:] == (0, 1, 0x100, 5) and table[2][3:] == (3, 8, 0x201, 5)
    assert table[:3] == cpuid.for_vcpu(old, 5, 8, Topology(1, 8, 1, 1))[:3]


# --- MADT and _MAT ----------------------------------------------------------------------------

def processors(madt: bytes):
    """(uid, APIC id, flags) of each Local APIC / x2APIC structure."""
    out, offset = [], 44
    while offset < len(madt):
        kind, length = madt[offset], madt[offset + 1]
        if kind == 0:
            uid, apic_id, flags = struct.unpack_from("<BBI", madt, offset + 2)
            out.append((uid, apic_id, flags))
        elif kind == 9:
            apic_id, flags, uid = struct.unpack_from("<III", madt, offset + 4)
            out.append((uid, apic_id, flags))
        offset += length
    return out


def test_madt_and_mat_carry_the_topologys_apic_ids():
    topo = Topology(2, 3, 1, 2)
    ids = topo.apic_ids(12)
    madt = build(AcpiPlatform(boot_cpus=4, max_cpus=12, apic_ids=ids)).tables["APIC"]
    assert processors(madt) == [(i, ids[i], ENABLED if i < 4 else ONLINE_CAPABLE) for i in range(12)]
    # The machine's _MAT: the same structure, Enabled; the device stays named by the index.
    aml = b"".join(a.to_bytes() for a in cpu_hotplug_aml(platform_devices(40)["cpu_hotplug"], 12,
                                                         lambda i: processor_entry(i, 12, ids[i]).to_bytes()))
    for i in range(12):
        mat = struct.pack("<BBBBI", 0, 8, i, ids[i], ENABLED)
        assert b"_MAT\x11\x0b\x0a\x08" + mat in aml
        assert f"C{i:03X}".encode() in aml


def test_madt_without_ids_is_the_index_and_large_ids_use_x2apic():
    assert processors(Madt(1, 3).to_bytes()) == [(0, 0, 1), (1, 1, 2), (2, 2, 2)]
    assert processors(Madt(2, 2, apic_ids=(0, 300)).to_bytes()) == [(0, 0, 1), (1, 300, 1)]


@pytest.mark.parametrize("ids", [(0, 1), (0, 1, 1), (0, 1, 2, 3)])
def test_madt_refuses_apic_ids_that_do_not_fit(ids):
    with pytest.raises(AcpiError, match="APIC ids"):
        Madt(1, 3, apic_ids=ids)


def test_max_phys_bits_and_nested_off_are_applied_to_cpuid():
    from plugvm.cpu.cpuid import SVM_BIT, VMX_BIT, limited, phys_bits
    host = [(1, 0, 0, 0, 0, VMX_BIT | 1, 0), (0x8000_0001, 0, 0, 0, 0, SVM_BIT | 1, 0),
            (0x8000_0008, 0, 0, 0x3030, 0, 0, 0)]                     # 48 physical bits
    assert phys_bits(host) == 46 and phys_bits(host, 40) == 40 and phys_bits(host, 52) == 48
    leaves = {e[0]: e for e in limited(host, max_phys_bits=40, nested=False)}
    assert leaves[0x8000_0008][3] == 0x3028                         # virtual bits kept, physical 40
    assert leaves[1][5] == 1 and leaves[0x8000_0001][5] == 1         # no VMX, no SVM
    kept = {e[0]: e for e in limited(host)}
    assert kept[1][5] & VMX_BIT and kept[0x8000_0001][5] & SVM_BIT and kept[0x8000_0008][3] == 0x302E
