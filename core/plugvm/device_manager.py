"""The PCI devices of one boot: ids, slots and BARs given out as cloud-hypervisor does
(notes §2.2), devices built by their plugins' factories and put behind the virtio-pci
transport. Hotplug (a later issue) adds and removes through the same methods."""

from __future__ import annotations

from dataclasses import dataclass

import structlog

from plugvm.errors import PlugvmError
from plugvm.pci.segment import PciSegment
from plugvm.virtio.pci_transport import BAR0_SIZE, VirtioPciDevice

log = structlog.get_logger(__name__)
VIRTIO_BAR_ALIGNMENT = 8 << 20      # cloud-hypervisor aligns virtio BAR0 (512 KiB) to 8 MiB


class DeviceError(PlugvmError, RuntimeError):
    """A device could not be added; nothing of it is left attached."""


@dataclass(frozen=True)
class PciDeviceInfo:
    id: str
    bdf: str

    def to_json(self) -> dict:
        return {"id": self.id, "bdf": self.bdf}


@dataclass(frozen=True)
class DeviceEnv:
    """What a plugin's factory may look at when it builds a device."""

    vm_config: object


class DeviceManager:
    def __init__(self, vm, memory, mmio, router, registry, segment: PciSegment, vm_config):
        self.vm, self.memory, self.mmio, self.router = vm, memory, mmio, router
        self.registry = registry
        self.segment = segment
        self.vm_config = vm_config
        self.devices: dict[str, tuple[int, VirtioPciDevice, int]] = {}     # id → (slot, transport, bar address)
        self._counter = 0

    def boot_devices(self) -> list[tuple[object, object]]:
        """(type, config) for every device the VM config asks for, in cloud-hypervisor's
        creation order, with explicit slots reserved first."""
        wanted = []
        for device_type in self.registry.ordered():
            configs = self.vm_config.devices.get(device_type.config_key)
            if configs is None:
                configs = () if device_type.default is None else (device_type.default(),)
            elif not device_type.multiple:
                configs = (configs,)
            wanted += [(device_type, config) for config in configs]
        return wanted

    def attach_boot_devices(self) -> None:
        wanted = self.boot_devices()
        taken = {c.id for _, c in wanted if getattr(c, "id", None)}
        for device_type, config in wanted:
            if getattr(config, "pci_device_id", None) is not None:
                self.segment.allocate_slot(config.pci_device_id)
        for device_type, config in wanted:
            self.add(device_type, config, reserved=True, taken=taken)

    def next_id(self, prefix: str, taken: set) -> str:
        # One counter for every prefix, skipping names in use (vmm/src/device_manager.rs next_device_name).
        while True:
            name = f"{prefix}{self._counter}"
            self._counter += 1
            if name not in taken and name not in self.devices:
                return name

    def add(self, device_type, config, *, reserved: bool = False, taken: set = frozenset(),
            bar_64bit: bool = False) -> PciDeviceInfo:
        device_id = getattr(config, "id", None) or device_type.fixed_id or self.next_id(device_type.id_prefix, taken)
        if device_id in self.devices:
            raise DeviceError(f"{device_type.cli_option}: a device with id {device_id!r} already exists")
        explicit = getattr(config, "pci_device_id", None)
        slot = explicit if (explicit is not None and reserved) else self.segment.allocate_slot(explicit)
        bar = window = None
        device = transport = None
        try:
            window = self.segment.mem64 if bar_64bit else self.segment.mem32
            bar = window.allocate(BAR0_SIZE, VIRTIO_BAR_ALIGNMENT)
            device = device_type.create(config, DeviceEnv(self.vm_config))
            transport = VirtioPciDevice(device, device_id, self.memory, self.vm, self.router, bar, bar_64bit)
            device = None           # the transport owns it now
            self.mmio.insert(bar, BAR0_SIZE, transport)
            self.segment.attach(slot, transport)
        except BaseException:
            if transport is not None:
                try:
                    self.mmio.remove(bar)
                except ValueError:
                    pass
                transport.close()
            if device is not None:
                device.close()
            if bar is not None:
                window.free(bar)
            self.segment.free_slot(slot)
            raise
        self.devices[device_id] = (slot, transport, bar)
        info = PciDeviceInfo(device_id, self._bdf(slot))
        log.info("device added", id=device_id, bdf=info.bdf, type=device_type.name)
        return info

    def device_tree(self) -> dict:
        """cloud-hypervisor's device tree: each virtio device under its `_virtio-pci-<id>`
        node, which holds the PCI BDF."""
        tree = {}
        for device_id, (slot, transport, bar) in self.devices.items():
            parent = f"_virtio-pci-{device_id}"
            tree[device_id] = {"id": device_id, "resources": [], "parent": parent, "children": []}
            tree[parent] = {"id": parent, "resources": [{"PciBar": {"index": 0, "base": bar, "size": BAR0_SIZE,
                                                                     "type": "Mmio32" if bar < 1 << 32 else "Mmio64",
                                                                     "prefetchable": False}}],
                            "children": [device_id], "pci_bdf": self._bdf(slot)}
        return tree

    def counters(self) -> dict:
        """Per-device counters, for devices that keep them (a `counters` dict of integers)."""
        return {device_id: dict(transport.device.counters) for device_id, (_, transport, _) in self.devices.items()
                if isinstance(getattr(transport.device, "counters", None), dict)}

    def _bdf(self, slot: int) -> str:
        return f"{self.segment.segment_id:04x}:00:{slot:02x}.0"

    def close(self) -> None:
        for device_id, (slot, transport, bar) in list(self.devices.items()):
            try:
                transport.close()
            except Exception:
                log.exception("closing a device failed", id=device_id)
        self.devices.clear()
