"""The VM's configuration: the same dataclasses whether it comes from the command line or
from cloud-hypervisor's JSON body (VmConfig in notes §1.4, with ch's field names)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from plugvm.config import console as consoles
from plugvm.config.console import ConsoleConfig, ConsoleMode, VirtioConsoleConfig
from plugvm.config.cpus import CpusConfig
from plugvm.config.errors import ConfigError, DuplicateIdError, Where
from plugvm.config.json_fields import JsonObject
from plugvm.config.memory import MemoryConfig, check_method
from plugvm.config.payload import PayloadConfig
from plugvm.config.platform import PlatformConfig

JSON = Where("VmConfig", json=True)
_ABSENT = object()     # a part left out of the body (null is refused: ch's parts are not Options)


# cloud-hypervisor's VmConfig fields for devices, which plugins provide: one that no
# installed plugin provides is refused unless it asks for nothing.
DEVICE_KEYS = {"disks": "--disk", "net": "--net", "rng": "--rng", "fs": "--fs", "pmem": "--pmem", "vsock": "--vsock"}
# cloud-hypervisor's VmConfig fields (its API spec) that plugvm has no implementation of.
LACKING = {
    "rate_limit_groups": "plugvm has no I/O rate limiting",
    "balloon": "plugvm has no virtio-balloon",
    "generic_vhost_user": "plugvm has no generic vhost-user devices",
    "debug_console": "plugvm has no debug console (port 0xe9)",
    "devices": "plugvm has no VFIO device passthrough",
    "user_devices": "plugvm has no vfio-user devices",
    "vdpa": "plugvm has no vDPA devices",
    "numa": "plugvm has no NUMA topology",
    "iommu": "plugvm has no virtual IOMMU",
    "watchdog": "plugvm has no watchdog device",
    "rtc": "plugvm has no RTC configuration",
    "pvpanic": "plugvm has no pvpanic device",
    "pci_segments": "plugvm has no per-segment aperture configuration",
    "tpm": "plugvm has no TPM",
    "landlock_enable": "plugvm has no Landlock sandbox",
    "landlock_rules": "plugvm has no Landlock sandbox",
}


@dataclass(frozen=True, kw_only=True)
class VmConfig:
    """Everything needed to build and boot one VM. Parts not given take ch's defaults
    (among them `--serial null --console tty`). `console` is a part of its own, as in ch's
    VmConfig, not one of `devices`; the built-in virtio-console device type reads it."""

    payload: PayloadConfig
    cpus: CpusConfig = field(default_factory=CpusConfig)
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    serial: ConsoleConfig = field(default_factory=lambda: ConsoleConfig(mode=ConsoleMode.NULL))
    console: VirtioConsoleConfig = field(default_factory=VirtioConsoleConfig)
    platform: PlatformConfig = field(default_factory=PlatformConfig)
    # Plugin devices by their type's config_key ("disks" → a tuple of configs; "rng" → one config).
    devices: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self):
        # Here, so that the CLI, vm.create and a cold vm.add-* all refuse what would only
        # fail at boot.
        configs = [c for value in self.devices.values() for c in (value if isinstance(value, tuple) else (value,))]
        configs.append(self.console)
        seen: dict[str, int] = {}
        for c in configs:
            device_id = getattr(c, "id", None)
            if device_id is not None:
                if device_id in seen:
                    raise DuplicateIdError(f"VmConfig: the device id {device_id!r} is used twice "
                                           f"(IdentifierNotUnique)")
                seen[device_id] = 1
        slots: set[tuple[int, int]] = set()
        for c in configs:
            slot = getattr(c, "pci_device_id", None)
            if slot is not None:
                place = (getattr(c, "pci_segment", 0) or 0, slot)
                if place in slots:
                    raise ConfigError(f"VmConfig: pci_device_id {slot} of segment {place[0]} is given to two devices")
                slots.add(place)
        # Whether the devices fit their segments' slots, defaults counted, is
        # device_manager.check_slots's: it knows the installed types.

    @classmethod
    def from_json(cls, body: object, registry=None) -> VmConfig:
        """A parsed JSON body (vm.create), checked as the command line is; unknown fields are
        refused, and each part not given takes its default, as ch's serde does. Device
        fields are those of the installed plugins (`registry`, default: all installed)."""
        if registry is None:
            from plugvm import plugins
            registry = plugins.load()
        j = JsonObject(body, JSON)
        devices = {}
        for device_type in registry.ordered():
            if device_type.configured_by is not None:
                continue          # set by a part of the VM config itself (the console)
            value = j.array(device_type.config_key, None) if device_type.multiple \
                else j.object(device_type.config_key, None, Where(device_type.config_key, json=True))
            if value is None:
                continue
            if device_type.multiple:
                devices[device_type.config_key] = tuple(device_type.from_json(item) for item in value)
            else:
                devices[device_type.config_key] = device_type.from_json(value.value)
        # Fields of ch's VmConfig for what plugvm lacks: a value asking for it is a 400
        # naming it; one asking for nothing is what clients send by default. (A device
        # field an installed plugin provides was read above, and is not in this list.)
        provided = {t.config_key for t in registry.types.values()}
        for key, why in LACKING.items():
            if key not in provided:
                j.lacking(key, why)
        from plugvm.plugins import missing
        for key in DEVICE_KEYS.keys() - provided:
            j.lacking(key, missing(DEVICE_KEYS[key]))
        # Each part is named on its own in errors (`cpus: ...`), as ch's API documents them.
        payload = j.object("payload", where=Where("payload", json=True))
        cpus, memory, serial, console, platform = (j.object(name, _ABSENT, Where(name, json=True))
                                                   for name in ("cpus", "memory", "serial", "console", "platform"))
        j.close()
        memory = MemoryConfig() if memory is _ABSENT else MemoryConfig.from_json(memory)
        check_method(memory, registry, Where("memory", json=True))
        return cls(
            payload=PayloadConfig.from_json(payload),
            cpus=CpusConfig() if cpus is _ABSENT else CpusConfig.from_json(cpus),
            memory=memory,
            serial=ConsoleConfig(mode=ConsoleMode.NULL) if serial is _ABSENT else consoles.serial_from_json(serial),
            console=VirtioConsoleConfig() if console is _ABSENT else consoles.console_from_json(console),
            platform=PlatformConfig() if platform is _ABSENT else PlatformConfig.from_json(platform),
            devices=devices,
        )

    def to_json(self) -> dict:
        """The JSON body ch would send for this VM, which from_json() reads back unchanged."""
        return {"cpus": self.cpus.to_json(), "memory": self.memory.to_json(), "payload": self.payload.to_json(),
                "serial": self.serial.to_json(), "console": self.console.to_json(),
                # Left out at its default (one segment), as ch's Option<PlatformConfig> is None then.
                **({"platform": self.platform.to_json()} if self.platform != PlatformConfig() else {}),
                **{key: [c.to_json() for c in value] if isinstance(value, tuple) else value.to_json()
                   for key, value in self.devices.items()}}
