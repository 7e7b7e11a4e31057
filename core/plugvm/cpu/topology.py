"""Where each vCPU sits (thread, core, die, package) and the APIC id that says so.

An x2APIC id packs the four numbers into bit fields, thread lowest, each as wide as
its count rounded up to a power of two (SDM vol. 3A 10.12.8.1; AMD APM vol. 2 16.3.3),
which is how cloud-hypervisor numbers its vCPUs (arch/src/x86_64/mod.rs
get_x2apic_id): 2:3:1:1 gives CPUs 6, 7, 8 the ids 8, 9, 10. The CPU index stays the
ACPI processor UID and the hotplug selector; the APIC id is only what the guest's
APIC, CPUID and MADT say.
"""

from __future__ import annotations

from dataclasses import dataclass


def field_width(count: int) -> int:
    """Bits of an APIC-id field that numbers `count` things (0 for one)."""
    return max(count - 1, 0).bit_length()


@dataclass(frozen=True)
class Topology:
    """threads_per_core:cores_per_die:dies_per_package:packages, as `--cpus topology=`."""

    threads_per_core: int
    cores_per_die: int
    dies_per_package: int
    packages: int

    @classmethod
    def of(cls, topology, max_vcpus: int) -> Topology:
        """The VM's topology: `topology` (anything with the four fields, e.g. a
        config.cpus.CpuTopology), or without one max_vcpus single-threaded cores on one
        die in one package, where every APIC id is the CPU index."""
        if topology is None:
            return cls(1, max_vcpus, 1, 1)
        return cls(topology.threads_per_core, topology.cores_per_die, topology.dies_per_package,
                   topology.packages)

    # The shifts: where each field starts in an APIC id.
    @property
    def core_shift(self) -> int:
        return field_width(self.threads_per_core)

    @property
    def die_shift(self) -> int:
        return self.core_shift + field_width(self.cores_per_die)

    @property
    def package_shift(self) -> int:
        return self.die_shift + field_width(self.dies_per_package)

    # How many logical processors each level holds.
    @property
    def per_core(self) -> int:
        return self.threads_per_core

    @property
    def per_die(self) -> int:
        return self.threads_per_core * self.cores_per_die

    @property
    def per_package(self) -> int:
        return self.per_die * self.dies_per_package

    def place(self, index: int) -> tuple[int, int, int, int]:
        """(thread, core, die, package) of CPU `index`; CPUs fill a core, then a die, ..."""
        return (index % self.threads_per_core, index // self.per_core % self.cores_per_die,
                index // self.per_die % self.dies_per_package, index // self.per_package)

    def apic_id(self, index: int) -> int:
        """CPU `index`'s APIC id."""
        thread, core, die, package = self.place(index)
        return thread | core << self.core_shift | die << self.die_shift | package << self.package_shift

    def apic_ids(self, count: int) -> tuple[int, ...]:
        """The APIC ids of CPUs 0..count-1."""
        return tuple(self.apic_id(i) for i in range(count))
