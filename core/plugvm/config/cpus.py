"""--cpus and the JSON `cpus` object: how many vCPUs, their topology, and host-side CPU options.

Keys, defaults and rules are cloud-hypervisor's (vmm/src/config.rs CpusConfig::parse and
VmConfig::validate; notes §2.2); plugvm also refuses boot=0 and affinity for a vCPU
that does not exist, or given twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from plugvm.config.errors import Where
from plugvm.config.json_fields import ChEnum, JsonObject
from plugvm.config.lists import string_list, tuple_list
from plugvm.config.options import U8, U16, U32, U64, Options, to_int

MAX_VCPUS = 8192            # ch's MAX_SUPPORTED_CPUS with KVM on x86_64
MAX_THREADS_PER_CORE = 2    # ch refuses more on x86_64
DEFAULT_MAX_PHYS_BITS = 46  # ch: PVH boot limits the guest to a 46-bit space by default
FEATURES = ("amx",)
_TOPOLOGY_FIELDS = ("threads_per_core", "cores_per_die", "dies_per_package", "packages")

CLI = Where("--cpus", {"boot_vcpus": "boot", "max_vcpus": "max"})
KEYS = ("boot", "max", "topology", "kvm_hyperv", "max_phys_bits", "affinity", "features", "nested",
        "core_scheduling")


class CoreScheduling(ChEnum):
    """Which vCPUs may share a host core under Linux core scheduling."""

    VM = "vm"
    VCPU = "vcpu"
    OFF = "off"


@dataclass(frozen=True)
class CpuTopology:
    """`topology=T:C:D:P`; the product must equal max_vcpus."""

    threads_per_core: int
    cores_per_die: int
    dies_per_package: int
    packages: int

    @property
    def vcpus(self) -> int:
        return self.threads_per_core * self.cores_per_die * self.dies_per_package * self.packages

    def __str__(self) -> str:
        return f"{self.threads_per_core}:{self.cores_per_die}:{self.dies_per_package}:{self.packages}"


@dataclass(frozen=True)
class CpuAffinity:
    """The host CPUs one vCPU's thread may run on."""

    vcpu: int
    host_cpus: tuple[int, ...]


@dataclass(frozen=True)
class CpuFeatures:
    """CPU features the guest gets only when asked for."""

    amx: bool = False


@dataclass(frozen=True)
class CpusConfig:
    """The vCPUs: boot_vcpus at start, up to max_vcpus by hotplug."""

    boot_vcpus: int = 1
    max_vcpus: int = 1
    topology: CpuTopology | None = None
    kvm_hyperv: bool = False
    max_phys_bits: int = DEFAULT_MAX_PHYS_BITS
    affinity: tuple[CpuAffinity, ...] | None = None
    features: CpuFeatures = field(default_factory=CpuFeatures)
    nested: bool = True
    core_scheduling: CoreScheduling = CoreScheduling.VM

    def validate(self, where: Where) -> None:
        boot, most = where.key("boot_vcpus"), where.key("max_vcpus")
        if self.boot_vcpus < 1:
            raise where.bad("boot_vcpus", self.boot_vcpus, "is too few: a VM boots with at least one vCPU")
        if self.max_vcpus < self.boot_vcpus:
            raise where.error(f"{most}={self.max_vcpus} is lower than {boot}={self.boot_vcpus}")
        if self.max_vcpus > MAX_VCPUS:
            raise where.bad("max_vcpus", self.max_vcpus, f"is above the limit of {MAX_VCPUS} vCPUs")
        if (t := self.topology) is not None:
            if 0 in (t.threads_per_core, t.cores_per_die, t.dies_per_package, t.packages):
                raise where.bad("topology", str(t), "has a zero part")
            if t.threads_per_core > MAX_THREADS_PER_CORE:
                raise where.bad("topology", str(t), f"has more than {MAX_THREADS_PER_CORE} threads per core")
            if t.vcpus != self.max_vcpus:
                raise where.bad("topology", str(t), f"makes {t.vcpus} vCPU(s), but {most}={self.max_vcpus}")
        # Accepted by ch and not (yet) applied by plugvm: refused unless at the default,
        # rather than shown in vm.info and silently ignored.
        if not 32 <= self.max_phys_bits <= 52:
            raise where.bad("max_phys_bits", self.max_phys_bits, "is not a guest physical address width (32 to 52)")
        if self.kvm_hyperv:
            raise where.bad("kvm_hyperv", "on", "is not supported (plugvm offers no Hyper-V enlightenments)")
        if self.features.amx:
            raise where.bad("features", "amx", "is not supported (plugvm does not give guests AMX state)")
        if self.core_scheduling is not CoreScheduling.VM:
            raise where.bad("core_scheduling", self.core_scheduling.value,
                            "is not supported (plugvm sets no core scheduling cookies; only the default is accepted)")
        seen: set[int] = set()
        for a in self.affinity or ():
            if a.vcpu >= self.max_vcpus:
                raise where.error(f"affinity for vCPU {a.vcpu}, but the VM has only {most}={self.max_vcpus}")
            if a.vcpu in seen:
                raise where.error(f"affinity for vCPU {a.vcpu} is given twice")
            if not a.host_cpus:
                raise where.error(f"affinity for vCPU {a.vcpu} has no host CPUs")
            seen.add(a.vcpu)

    @classmethod
    def parse(cls, text: str) -> CpusConfig:
        """The value of --cpus, e.g. `boot=2,max=4,topology=1:2:1:2`."""
        o = Options(text, CLI, KEYS)
        boot = o.integer("boot", 1, U32)
        affinity = o.convert("affinity", None, lambda v: tuple_list(v, U32, U64), "a list like [0@[0-3],1@[4]]")
        features = o.convert("features", (), string_list, "a list of features")
        for name in features:
            if name not in FEATURES:
                raise CLI.error(f"features: unknown feature {name!r} (known: {', '.join(FEATURES)})")
        config = cls(
            boot_vcpus=boot,
            max_vcpus=o.integer("max", boot, U32),
            topology=o.convert("topology", None, _topology, "T:C:D:P (threads per core, cores per die, dies per "
                               "package, packages)"),
            kvm_hyperv=o.toggle("kvm_hyperv", False),
            max_phys_bits=o.integer("max_phys_bits", DEFAULT_MAX_PHYS_BITS, U8),
            affinity=None if affinity is None else tuple(CpuAffinity(v, cpus) for v, cpus in affinity),
            features=CpuFeatures(amx="amx" in features),
            nested=o.toggle("nested", True),
            core_scheduling=o.choice("core_scheduling", CoreScheduling.VM, CoreScheduling.cli_choices()),
        )
        config.validate(CLI)
        return config

    @classmethod
    def from_json(cls, j: JsonObject) -> CpusConfig:
        topology = None
        if (tj := j.object("topology", None)) is not None:
            topology = CpuTopology(*(tj.integer(name, high=U16) for name in _TOPOLOGY_FIELDS))
            tj.close()
        affinity = j.array("affinity", None)
        if affinity is not None:
            affinity = tuple(_affinity_from_json(JsonObject(a, j.where.inner("affinity"))) for a in affinity)
        amx = False
        if (fj := j.object("features", None)) is not None:
            amx = fj.boolean("amx", False)
            fj.close()
        config = cls(
            boot_vcpus=j.integer("boot_vcpus", high=U32),
            max_vcpus=j.integer("max_vcpus", high=U32),
            topology=topology,
            kvm_hyperv=j.boolean("kvm_hyperv", False),
            max_phys_bits=j.integer("max_phys_bits", DEFAULT_MAX_PHYS_BITS, high=U8),
            affinity=affinity,
            features=CpuFeatures(amx=amx),
            nested=j.boolean("nested", True),
            core_scheduling=j.enum("core_scheduling", CoreScheduling, CoreScheduling.VM),
        )
        j.close()
        config.validate(j.where)
        return config

    def to_json(self) -> dict:
        body: dict = {"boot_vcpus": self.boot_vcpus, "max_vcpus": self.max_vcpus}
        if self.topology is not None:
            body["topology"] = {name: getattr(self.topology, name) for name in _TOPOLOGY_FIELDS}
        body |= {"kvm_hyperv": self.kvm_hyperv, "max_phys_bits": self.max_phys_bits}
        if self.affinity is not None:
            body["affinity"] = [{"vcpu": a.vcpu, "host_cpus": list(a.host_cpus)} for a in self.affinity]
        body |= {"features": {"amx": self.features.amx}, "nested": self.nested,
                 "core_scheduling": self.core_scheduling.json_name}
        return body


def _topology(text: str) -> CpuTopology | None:
    parts = [to_int(part) for part in text.split(":")]
    if len(parts) != 4 or None in parts or max(parts) > U16:
        return None
    return CpuTopology(*parts)


def _affinity_from_json(j: JsonObject) -> CpuAffinity:
    vcpu = j.integer("vcpu", high=U32)
    host_cpus = j.array("host_cpus")
    for cpu in host_cpus:
        if not isinstance(cpu, int) or isinstance(cpu, bool) or cpu < 0:
            raise j.where.bad("host_cpus", host_cpus, "is not a list of CPU numbers")
    j.close()
    return CpuAffinity(vcpu, tuple(host_cpus))
