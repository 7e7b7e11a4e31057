"""CPUID for each vCPU: KVM_GET_SUPPORTED_CPUID, with the topology and APIC id of
that vCPU filled in as cloud-hypervisor does (arch/src/x86_64/mod.rs configure_vcpu,
update_cpuid_topology; SDM vol. 2A, CPUID; AMD APM vol. 3, E.4). The hypervisor
leaves 0x4000_00xx are passed through unchanged: PVM guests need them."""

from __future__ import annotations

from plugvm.cpu.topology import Topology

Entry = tuple[int, int, int, int, int, int, int]   # function, index, flags, eax, ebx, ecx, edx

HYPERVISOR_BIT = 1 << 31      # leaf 1 ECX: running under a hypervisor
HTT_BIT = 1 << 28             # leaf 1 EDX: more than one logical processor per package
CMP_LEGACY_BIT = 1 << 1       # 0x8000_0001 ECX (AMD): the logical processors of leaf 1 are cores
TOPOEXT_BIT = 1 << 22         # 0x8000_0001 ECX (AMD): leaves 0x8000_001D and 0x8000_001E exist
LEVEL_INVALID, LEVEL_SMT, LEVEL_CORE, LEVEL_DIE = 0, 1, 2, 5   # leaf 0xB/0x1F ECX[15:8]
SIGNIFICANT_INDEX = 1         # KVM_CPUID_FLAG_SIGNIFCANT_INDEX: the entry is one subleaf
AMD_VENDORS = (b"AuthenticAMD", b"HygonGenuine")
CACHE_TYPE, CACHE_LEVEL_SHIFT = 0x1F, 5            # leaf 4 / 0x8000_001D EAX[4:0], EAX[7:5]
SHARING_SHIFT, SHARING_MASK = 14, 0xFFF            # EAX[25:14]: addressable ids sharing the cache - 1
CORE_IDS_SHIFT, CORE_IDS_MASK = 26, 0x3F           # leaf 4 EAX[31:26]: addressable core ids - 1


def vendor(supported: list[Entry]) -> bytes:
    """The host's vendor string from leaf 0 (EBX, EDX, ECX), b"" without one."""
    for function, index, flags, eax, ebx, ecx, edx in supported:
        if function == 0:
            return b"".join(r.to_bytes(4, "little") for r in (ebx, edx, ecx))
    return b""


def topology_leaves(topo: Topology, apic_id: int, amd: bool) -> dict[tuple[int, int], tuple[int, int, int, int]]:
    """(function, subleaf) -> (eax, ebx, ecx, edx) of the leaves that only describe the
    topology, written whole: 0xB (SMT, then core holding the whole package, as Linux
    reads it for the package id), 0x1F (SMT, core, die), each ended by an invalid
    level, and on AMD 0x8000_001E (APM vol. 3, E.4.24: extended APIC id, core id and
    threads per core, node (= die) id and nodes per package)."""
    smt = (topo.core_shift, topo.per_core, LEVEL_SMT << 8 | 0, apic_id)
    package_wide = (topo.package_shift, min(topo.per_package, 0xFFFF))
    leaves = {
        (0xB, 0): smt,
        (0xB, 1): (*package_wide, LEVEL_CORE << 8 | 1, apic_id),
        (0xB, 2): (0, 0, LEVEL_INVALID << 8 | 2, apic_id),
        (0x1F, 0): smt,
        (0x1F, 1): (topo.die_shift, min(topo.per_die, 0xFFFF), LEVEL_CORE << 8 | 1, apic_id),
        (0x1F, 2): (*package_wide, LEVEL_DIE << 8 | 2, apic_id),
        (0x1F, 3): (0, 0, LEVEL_INVALID << 8 | 3, apic_id),
    }
    if amd:
        core_in_package = (apic_id & ((1 << topo.package_shift) - 1)) >> topo.core_shift
        node = apic_id >> topo.die_shift
        leaves[(0x8000_001E, 0)] = (apic_id, (topo.threads_per_core - 1) << 8 | core_in_package & 0xFF,
                                    (min(topo.dies_per_package, 8) - 1) << 8 | node & 0xFF, 0)
    return leaves


def _cache(eax: int, topo: Topology, intel_leaf4: bool) -> int:
    """A cache leaf's EAX with its sharing clamped to the guest's topology, never wider
    than the host's: L1 and L2 to one core, L3 and beyond to one die (the host's
    sharing is in its own APIC numbering); leaf 4 also gets the guest's core count."""
    level = eax >> CACHE_LEVEL_SHIFT & 0x7
    span = topo.core_shift if level <= 2 else topo.die_shift
    sharing = min(eax >> SHARING_SHIFT & SHARING_MASK, (1 << span) - 1)
    eax = eax & ~(SHARING_MASK << SHARING_SHIFT) | sharing << SHARING_SHIFT
    if intel_leaf4:
        core_ids = min((1 << (topo.package_shift - topo.core_shift)) - 1, CORE_IDS_MASK)
        eax = eax & ~(CORE_IDS_MASK << CORE_IDS_SHIFT) | core_ids << CORE_IDS_SHIFT
    return eax & 0xFFFF_FFFF


def for_vcpu(supported: list[Entry], apic_id: int, max_vcpus: int, topology: Topology | None = None) -> list[Entry]:
    """The CPUID table of the vCPU with this APIC id: `topology`, or without one
    max_vcpus single-threaded cores in one package. Entries keep KVM's order; the
    topology leaves KVM did not list are added at the end."""
    topo = topology or Topology.of(None, max_vcpus)
    amd = vendor(supported) in AMD_VENDORS
    multi = topo.per_package > 1
    leaves = topology_leaves(topo, apic_id, amd)
    out: list[Entry] = []
    for function, index, flags, eax, ebx, ecx, edx in supported:
        if (function, index) in leaves:
            eax, ebx, ecx, edx = leaves.pop((function, index))
        elif function in (0xB, 0x1F):        # a level past ours: invalid
            eax, ebx, ecx, edx = 0, 0, index, apic_id
        elif function == 1:
            # EBX[23:16] logical processors per package, EBX[31:24] initial APIC id.
            ebx = (ebx & 0xFFFF) | (min(topo.per_package, 255) << 16) | ((apic_id & 0xFF) << 24)
            ecx |= HYPERVISOR_BIT
            edx = edx | HTT_BIT if multi else edx & ~HTT_BIT
        elif function in (4, 0x8000_001D) and eax & CACHE_TYPE:
            eax = _cache(eax, topo, intel_leaf4=function == 4)
        elif function == 0x8000_0001 and amd and multi:
            ecx |= CMP_LEGACY_BIT | TOPOEXT_BIT
        elif function == 0x8000_0008 and amd:
            # ECX[15:12] ApicIdSize: the bits below the package id; ECX[7:0] threads per package - 1.
            ecx = (ecx & ~0xF0FF) | (min(topo.package_shift, 0xF) << 12) | (min(topo.per_package, 256) - 1)
        out.append((function, index, flags, eax, ebx, ecx, edx))
    out += [(function, index, SIGNIFICANT_INDEX if function in (0xB, 0x1F) else 0, *regs)
            for (function, index), regs in leaves.items()]
    return out


MAX_PHYS_BITS = 46      # cloud-hypervisor's default max_phys_bits
VMX_BIT = 1 << 5        # leaf 1 ECX
SVM_BIT = 1 << 2        # leaf 0x8000_0001 ECX


def phys_bits(supported: list[Entry], max_phys_bits: int = MAX_PHYS_BITS) -> int:
    """The guest's physical address width: the host's (leaf 0x80000008), at most
    max_phys_bits (--cpus max_phys_bits, 46 by default as in cloud-hypervisor)."""
    for function, index, flags, eax, ebx, ecx, edx in supported:
        if function == 0x8000_0008:
            return min(eax & 0xFF, max_phys_bits)
    return min(36, max_phys_bits)      # no leaf: the architectural minimum for long mode with PAE


def limited(entries: list[Entry], *, max_phys_bits: int = MAX_PHYS_BITS, nested: bool = True) -> list[Entry]:
    """The guest's CPUID with the --cpus limits applied, as cloud-hypervisor applies them:
    the physical address width (leaf 0x8000_0008 EAX[7:0]) at most max_phys_bits, and
    with nested=off no VMX (leaf 1) and no SVM (0x8000_0001), so the guest runs no VMs."""
    out = []
    for function, index, flags, eax, ebx, ecx, edx in entries:
        if function == 0x8000_0008:
            eax = (eax & ~0xFF) | min(eax & 0xFF, max_phys_bits)
        elif function == 1 and not nested:
            ecx &= ~VMX_BIT
        elif function == 0x8000_0001 and not nested:
            ecx &= ~SVM_BIT
        out.append((function, index, flags, eax, ebx, ecx, edx))
    return out
