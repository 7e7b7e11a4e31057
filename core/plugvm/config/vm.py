"""The VM's configuration: the same dataclasses whether it comes from the command line or
from cloud-hypervisor's JSON body (VmConfig in notes §1.4, with ch's field names)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from plugvm.config import console as consoles
from plugvm.config.console import ConsoleConfig, ConsoleMode, VirtioConsoleConfig
from plugvm.config.cpus import CpusConfig
from plugvm.config.errors import Where
from plugvm.config.json_fields import JsonObject
from plugvm.config.memory import MemoryConfig
from plugvm.config.payload import PayloadConfig

JSON = Where("VmConfig", json=True)
_ABSENT = object()     # a part left out of the body (null is refused: ch's parts are not Options)


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
    # Plugin devices by their type's config_key ("disks" → a tuple of configs; "rng" → one config).
    devices: Mapping[str, object] = field(default_factory=dict)

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
        # Each part is named on its own in errors (`cpus: ...`), as ch's API documents them.
        payload = j.object("payload", where=Where("payload", json=True))
        cpus, memory, serial, console = (j.object(name, _ABSENT, Where(name, json=True))
                                         for name in ("cpus", "memory", "serial", "console"))
        j.close()
        return cls(
            payload=PayloadConfig.from_json(payload),
            cpus=CpusConfig() if cpus is _ABSENT else CpusConfig.from_json(cpus),
            memory=MemoryConfig() if memory is _ABSENT else MemoryConfig.from_json(memory),
            serial=ConsoleConfig(mode=ConsoleMode.NULL) if serial is _ABSENT else consoles.serial_from_json(serial),
            console=VirtioConsoleConfig() if console is _ABSENT else consoles.console_from_json(console),
            devices=devices,
        )

    def to_json(self) -> dict:
        """The JSON body ch would send for this VM, which from_json() reads back unchanged."""
        return {"cpus": self.cpus.to_json(), "memory": self.memory.to_json(), "payload": self.payload.to_json(),
                "serial": self.serial.to_json(), "console": self.console.to_json(),
                **{key: [c.to_json() for c in value] if isinstance(value, tuple) else value.to_json()
                   for key, value in self.devices.items()}}
