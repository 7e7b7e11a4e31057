"""--memory and the JSON `memory` object: guest RAM at boot and the hotplug window.

Keys, defaults and rules are cloud-hypervisor's (vmm/src/config.rs MemoryConfig::parse and
VmConfig::validate, vmm/src/memory_manager.rs validate_memory_config; notes §2.2, §3c, §3d).
--memory-zone is not supported, so size=0 is refused. The hotplug methods are plugins'
(memory_hotplug.py): the rules of one method are its own validate()'s, checked by
check_method() once the installed methods are known.
"""

from __future__ import annotations

import mmap
import re
from dataclasses import dataclass

from plugvm.config.errors import Where
from plugvm.config.json_fields import JsonObject
from plugvm.config.options import Options, dequote
from plugvm.config.sizes import MiB

DEFAULT_SIZE = 512 * MiB
DEFAULT_METHOD = "acpi"           # ch's default HotplugMethod

CLI = Where("--memory")
# What 52 physical address bits (x86-64's most) reach, less the 32-bit hole and the
# device areas: a bound for any one size, before the host is asked for the memory.
MAX_GUEST_RAM = 1 << 51
KEYS = ("size", "mergeable", "shared", "hugepages", "hugepage_size", "hotplug_method", "hotplug_size",
        "hotplugged_size", "prefault", "reserve", "thp")
_METHOD_NAME = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*")
_JSON_METHOD_NAME = re.compile(r"([A-Z][a-z0-9]*)+")


def method_json_name(name: str) -> str:
    """A method's name as ch's serde spells the variant: virtio-mem → VirtioMem."""
    return "".join(word.capitalize() for word in name.split("-"))


def method_from_json(value: str) -> str | None:
    """VirtioMem → virtio-mem; None for what is not a variant name."""
    if not _JSON_METHOD_NAME.fullmatch(value):
        return None
    return "-".join(word.lower() for word in re.findall(r"[A-Z][a-z0-9]*", value))


def check_method(config: "MemoryConfig", registry, where: Where) -> None:
    """The config's hotplug_method must be an installed plugin's when it is used (a
    hotplug_size, or a method named other than the default), and that method's rules
    must hold. Raises ConfigError naming the option and, for a method that is not
    installed, the distribution it comes with."""
    from plugvm import plugins
    name = config.hotplug_method
    method = registry.memory_methods.get(name)
    if method is None:
        if config.hotplug_size is None and name == DEFAULT_METHOD:
            return
        shown = method_json_name(name) if where.json else name
        raise where.bad("hotplug_method", shown, "is not available: " + plugins.missing(f"hotplug_method={name}"))
    method.validate(config, where)


@dataclass(frozen=True)
class MemoryConfig:
    """Guest RAM: `size` bytes at boot; up to `hotplug_size` more by hotplug."""

    size: int = DEFAULT_SIZE
    mergeable: bool = False
    hotplug_method: str = DEFAULT_METHOD           # a MemoryHotplugMethod's name
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
        if plug == 0:
            raise where.error("hotplug_size=0 is invalid (leave it out for no hotplug)")
        if plugged is None:
            return
        if plug is None:
            raise where.error("hotplugged_size needs hotplug_size")
        if plugged > plug:
            raise where.error(f"hotplugged_size={where.size(plugged)} is larger than "
                              f"hotplug_size={where.size(plug)}")

    @classmethod
    def parse(cls, text: str) -> MemoryConfig:
        """The value of --memory, e.g. `size=1G,hotplug_method=virtio-mem,hotplug_size=4G`."""
        o = Options(text, CLI, KEYS)
        config = cls(
            size=o.size("size", DEFAULT_SIZE),
            mergeable=o.toggle("mergeable", False),
            hotplug_method=o.convert("hotplug_method", DEFAULT_METHOD,
                                     lambda v: dequote(v).lower() if _METHOD_NAME.fullmatch(dequote(v).lower()) else None,
                                     "a method name (acpi, virtio-mem, ...)"),
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
            hotplug_method=cls._method_from_json(j),
            hotplug_size=j.integer("hotplug_size", None),
            hotplugged_size=j.integer("hotplugged_size", None),
            shared=j.boolean("shared", False),
            hugepages=j.boolean("hugepages", False),
            hugepage_size=j.integer("hugepage_size", None),
            prefault=j.boolean("prefault", False),
            reserve=j.boolean("reserve", False),
            thp=j.boolean("thp", True),
        )
        j.lacking("zones", "plugvm has no memory zones")
        j.close()
        config.validate(j.where)
        return config

    @staticmethod
    def _method_from_json(j: JsonObject) -> str:
        value = j.string("hotplug_method", method_json_name(DEFAULT_METHOD))
        name = method_from_json(value)
        if name is None:
            raise j.where.bad("hotplug_method", value, "is not a method's variant name (Acpi, VirtioMem, ...)")
        return name

    def to_json(self) -> dict:
        body = {"size": self.size, "mergeable": self.mergeable, "hotplug_method": method_json_name(self.hotplug_method),
                "hotplug_size": self.hotplug_size, "hotplugged_size": self.hotplugged_size, "shared": self.shared,
                "hugepages": self.hugepages, "hugepage_size": self.hugepage_size, "prefault": self.prefault,
                "reserve": self.reserve, "thp": self.thp}
        # ch leaves out the Option fields that are None (skip_serializing_none).
        return {key: value for key, value in body.items() if value is not None}
