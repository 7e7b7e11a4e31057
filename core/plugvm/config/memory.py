"""--memory and the JSON `memory` object: guest RAM at boot and the hotplug window.

Keys, defaults and rules are cloud-hypervisor's (vmm/src/config.rs MemoryConfig::parse and
VmConfig::validate, vmm/src/memory_manager.rs validate_memory_config, virtio-devices/src/mem.rs;
notes §2.2, §3c, §3d). --memory-zone is not supported, so size=0 is refused.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass

from plugvm.config.errors import Where
from plugvm.config.json_fields import ChEnum, JsonObject
from plugvm.config.options import Options
from plugvm.config.sizes import MiB

DEFAULT_SIZE = 512 * MiB
# A virtio-mem region must be a whole number of Linux memory blocks (ch: VIRTIO_MEM_ALIGN_SIZE),
# and the amount plugged at boot a whole number of its 2 MiB device blocks.
VIRTIO_MEM_ALIGN = 128 * MiB
VIRTIO_MEM_BLOCK = 2 * MiB

CLI = Where("--memory")
# What 52 physical address bits (x86-64's most) reach, less the 32-bit hole and the
# device areas: a bound for any one size, before the host is asked for the memory.
MAX_GUEST_RAM = 1 << 51
KEYS = ("size", "mergeable", "shared", "hugepages", "hugepage_size", "hotplug_method", "hotplug_size",
        "hotplugged_size", "prefault", "reserve", "thp")


class HotplugMethod(ChEnum):
    """How RAM is added at run time: ACPI DIMMs (notes §3c) or a virtio-mem device (§3d)."""

    ACPI = "acpi"
    VIRTIO_MEM = "virtio-mem"


@dataclass(frozen=True)
class MemoryConfig:
    """Guest RAM: `size` bytes at boot; up to `hotplug_size` more by hotplug."""

    size: int = DEFAULT_SIZE
    mergeable: bool = False
    hotplug_method: HotplugMethod = HotplugMethod.ACPI
    hotplug_size: int | None = None
    hotplugged_size: int | None = None
    shared: bool = False
    hugepages: bool = False
    hugepage_size: int | None = None
    prefault: bool = False
    reserve: bool = False
    thp: bool = True

    def validate(self, where: Where) -> None:
        size, page = self.size, mmap.PAGESIZE
        if size == 0:
            raise where.error("size=0 is only valid with memory zones, which plugvm does not support")
        if size % page:
            raise where.error(f"size={where.size(size)} is not a multiple of the {page}-byte page size")
        for key, value in (("size", size), ("hotplug_size", self.hotplug_size or 0)):
            if value > MAX_GUEST_RAM:
                raise where.error(f"{key}={where.size(value)} is more than an x86-64 guest can address "
                                  f"({where.size(MAX_GUEST_RAM)})")
        if self.hugepage_size is not None:
            if not self.hugepages:
                raise where.error("hugepage_size needs hugepages=on")
            if self.hugepage_size & (self.hugepage_size - 1) or not self.hugepage_size:
                raise where.error(f"hugepage_size={where.size(self.hugepage_size)} is not a power of two")
            if size % self.hugepage_size:
                raise where.error(f"size={where.size(size)} is not a multiple of "
                                  f"hugepage_size={where.size(self.hugepage_size)}")
        if self.shared and self.mergeable:
            raise where.error("shared and mergeable cannot both be on")
        self._validate_hotplug(where)

    def _validate_hotplug(self, where: Where) -> None:
        plug, plugged = self.hotplug_size, self.hotplugged_size
        virtio_mem = self.hotplug_method is HotplugMethod.VIRTIO_MEM
        if plug == 0:
            raise where.error("hotplug_size=0 is invalid (leave it out for no hotplug)")
        if plug is not None and virtio_mem and plug % VIRTIO_MEM_ALIGN:
            raise where.error(f"hotplug_size={where.size(plug)} is not a multiple of 128M, as virtio-mem needs")
        if plugged is None:
            return
        if not virtio_mem:
            raise where.error(f"hotplugged_size is only valid with virtio-mem, not with hotplug_method "
                              f"{self.hotplug_method.value}")
        if plug is None:
            raise where.error("hotplugged_size needs hotplug_size")
        if plugged > plug:
            raise where.error(f"hotplugged_size={where.size(plugged)} is larger than "
                              f"hotplug_size={where.size(plug)}")
        if plugged % VIRTIO_MEM_BLOCK:
            raise where.error(f"hotplugged_size={where.size(plugged)} is not a multiple of virtio-mem's 2M block")

    @classmethod
    def parse(cls, text: str) -> MemoryConfig:
        """The value of --memory, e.g. `size=1G,hotplug_method=virtio-mem,hotplug_size=4G`."""
        o = Options(text, CLI, KEYS)
        config = cls(
            size=o.size("size", DEFAULT_SIZE),
            mergeable=o.toggle("mergeable", False),
            hotplug_method=o.choice("hotplug_method", HotplugMethod.ACPI, HotplugMethod.cli_choices()),
            hotplug_size=o.size("hotplug_size", None),
            hotplugged_size=o.size("hotplugged_size", None),
            shared=o.toggle("shared", False),
            hugepages=o.toggle("hugepages", False),
            hugepage_size=o.size("hugepage_size", None),
            prefault=o.toggle("prefault", False),
            reserve=o.toggle("reserve", False),
            thp=o.toggle("thp", True),
        )
        config.validate(CLI)
        return config

    @classmethod
    def from_json(cls, j: JsonObject) -> MemoryConfig:
        config = cls(
            size=j.integer("size"),
            mergeable=j.boolean("mergeable", False),
            hotplug_method=j.enum("hotplug_method", HotplugMethod, HotplugMethod.ACPI),
            hotplug_size=j.integer("hotplug_size", None),
            hotplugged_size=j.integer("hotplugged_size", None),
            shared=j.boolean("shared", False),
            hugepages=j.boolean("hugepages", False),
            hugepage_size=j.integer("hugepage_size", None),
            prefault=j.boolean("prefault", False),
            reserve=j.boolean("reserve", False),
            thp=j.boolean("thp", True),
        )
        j.close()
        config.validate(j.where)
        return config

    def to_json(self) -> dict:
        body = {"size": self.size, "mergeable": self.mergeable, "hotplug_method": self.hotplug_method.json_name,
                "hotplug_size": self.hotplug_size, "hotplugged_size": self.hotplugged_size, "shared": self.shared,
                "hugepages": self.hugepages, "hugepage_size": self.hugepage_size, "prefault": self.prefault,
                "reserve": self.reserve, "thp": self.thp}
        # ch leaves out the Option fields that are None (skip_serializing_none).
        return {key: value for key, value in body.items() if value is not None}
