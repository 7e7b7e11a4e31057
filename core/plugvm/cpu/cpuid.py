"""CPUID for each vCPU: KVM_GET_SUPPORTED_CPUID, with the topology and APIC id of
that vCPU filled in (SDM vol. 2A, CPUID; AMD APM vol. 3, E.4). The hypervisor
leaves 0x4000_00xx are passed through unchanged: PVM guests need them."""

from __future__ import annotations

Entry = tuple[int, int, int, int, int, int, int]   # function, index, flags, eax, ebx, ecx, edx

HYPERVISOR_BIT = 1 << 31      # leaf 1 ECX: running under a hypervisor
HTT_BIT = 1 << 28             # leaf 1 EDX: more than one logical processor per package
LEVEL_SMT, LEVEL_CORE = 1, 2  # leaf 0xB/0x1F ECX[15:8]


def _bits_for(count: int) -> int:
    """Width of an APIC-id field that numbers count things."""
    return max(count - 1, 0).bit_length()


def for_vcpu(supported: list[Entry], apic_id: int, max_vcpus: int) -> list[Entry]:
    """The CPUID table of the vCPU with this APIC id in a VM of max_vcpus single-threaded cores."""
    core_bits = _bits_for(max_vcpus)
    out: list[Entry] = []
    for function, index, flags, eax, ebx, ecx, edx in supported:
        if function == 1:
            ebx = (ebx & 0xFFFF) | (min(max_vcpus, 255) << 16) | ((apic_id & 0xFF) << 24)
            ecx |= HYPERVISOR_BIT
            edx = edx | HTT_BIT if max_vcpus > 1 else edx & ~HTT_BIT
        elif function in (0xB, 0x1F):
            if index == 0:
                eax, ebx, ecx = 0, 1, (LEVEL_SMT << 8) | index
            elif index == 1:
                eax, ebx, ecx = core_bits, max_vcpus, (LEVEL_CORE << 8) | index
            else:
                eax, ebx, ecx = 0, 0, index
            edx = apic_id
        elif function == 4 and (eax & 0x1F):
            # Cores per package − 1 in EAX[31:26]; one thread shares each cache level.
            eax = (eax & 0x3FF) | ((min(max_vcpus, 64) - 1) << 26)
        elif function == 0x8000_0008:
            ecx = (ecx & ~0xF0FF) | (core_bits << 12) | (max_vcpus - 1 & 0xFF)
        out.append((function, index, flags, eax, ebx, ecx, edx))
    return out


MAX_PHYS_BITS = 46      # cloud-hypervisor's default max_phys_bits


def phys_bits(supported: list[Entry]) -> int:
    """The guest's physical address width: the host's (leaf 0x80000008), at most 46."""
    for function, index, flags, eax, ebx, ecx, edx in supported:
        if function == 0x8000_0008:
            return min(eax & 0xFF, MAX_PHYS_BITS)
    return 36           # no leaf: the architectural minimum for long mode with PAE
