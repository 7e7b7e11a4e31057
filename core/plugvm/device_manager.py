"""The PCI devices of one boot: ids, slots and BARs given out as cloud-hypervisor does
(notes §2.2, §3e), devices built by their plugins' factories and put behind the
virtio-pci transport.

Boot devices and hot-added ones take the same path (add()); a hot-added device gets
64-bit BARs, as in cloud-hypervisor. Removal has two halves: request_removal() marks
the device (the machine then tells the guest), and eject(), called on a vCPU thread
when the guest writes B0EJ, releases everything the device holds. A device whose
removal is pending stays in the device tree, so its id cannot be reused until the
guest lets go of it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from plugvm.config.errors import ConfigError
from plugvm.device_config import PCI_SLOTS
from plugvm.errors import PlugvmError
from plugvm.bus import BusError
from plugvm.logs import get_logger
from plugvm.pci.allocator import AllocationError
from plugvm.pci.segment import PciSegment, SlotError
from plugvm.virtio.pci_transport import BAR0_SIZE, VirtioPciDevice

log = get_logger(__name__)
VIRTIO_BAR_ALIGNMENT = 8 << 20      # cloud-hypervisor aligns virtio BAR0 (512 KiB) to 8 MiB


class DeviceError(PlugvmError, RuntimeError):
    """A device could not be added; nothing of it is left attached."""


class UnknownDeviceError(DeviceError, LookupError):
    """No device has that id."""


class RemovalPendingError(DeviceError):
    """The device's removal was asked for and the guest has not ejected it yet."""


class RemovalNotAllowedError(DeviceError):
    """The device's type cannot be removed (a built-in device)."""


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
    consoles: object = None     # the host ends of the VM's consoles (serial_port.Consoles)
    # This boot's memory_hotplug.MemoryHotplug (None without hotplug_size): a method's own
    # device (virtio-mem) is built from it.
    memory_hotplug: object = None
    # What the previous boot's device with this id handed over at the guest's reboot
    # (VirtioDevice.handover()); the factory takes it over (and closes it if unused).
    handover: object = None
    hotplug: bool = False       # added to a running guest (an API request waits), not at boot
    # Guest-physical memory the device may own (plugvm.device_memory.DeviceRanges: map an fd
    # at a range of the 64-bit PCI window, in a KVM slot of its own). Whatever the device
    # still holds when it is closed, ejected or its create() fails, the core releases.
    guest_ranges: object = None


@dataclass(eq=False)
class Attached:
    """One device in a slot, and what it holds."""

    id: str
    type: object                        # its DeviceType
    slot: int
    transport: VirtioPciDevice
    bar: int
    window: object                      # the AddressAllocator its BAR came from
    removing: bool = False              # removal asked for, the guest has not ejected yet
    segment: int = 0                    # the id of its PCI segment
    gone: threading.Event = field(default_factory=threading.Event)    # set once ejected


def boot_devices(registry, vm_config) -> list[tuple[object, object]]:
    """(type, config) for every device a VM config asks for, in cloud-hypervisor's
    creation order: those its devices name, the built-in ones set by the config itself
    (the console), and the defaults of types it leaves out (rng)."""
    wanted = []
    for device_type in registry.ordered():
        configs = vm_config.devices.get(device_type.config_key)
        if device_type.configured_by is not None:
            configs = device_type.configured_by(vm_config)
        elif configs is None:
            configs = () if device_type.default is None else (device_type.default(),)
        elif not device_type.multiple:
            configs = (configs,)
        wanted += [(device_type, config) for config in configs]
    return wanted


def pci_segment_of(config) -> int:
    """The segment a device's config asks for: its pci_segment, 0 without one."""
    return getattr(config, "pci_segment", 0) or 0


def no_such_segment(name: str, index: int, segments: int) -> str:
    """The error for a device on segment `index` of a VM with `segments` (named `name`)."""
    return (f"{name}: pci_segment={index} does not exist: the VM has {segments} PCI "
            f"segment{'s' if segments > 1 else ''} (platform num_pci_segments)")


def check_slots(registry, vm_config, where: str = "VmConfig") -> None:
    """ConfigError unless the config's boot devices, defaults and built-ins counted, name
    segments the VM has and fit their slots (31 on segment 0, whose slot 0 is the host
    bridge; 32 on the others): so that a VM config that cannot boot is refused when it
    is given, not when it boots."""
    segments = vm_config.platform.num_pci_segments
    per_segment: dict[int, int] = {}
    for device_type, config in boot_devices(registry, vm_config):
        index = pci_segment_of(config)
        if index >= segments:
            # Named as the user wrote it: the option on the command line, the field in JSON.
            name = device_type.cli_option if where == "plugvm" else device_type.config_key
            raise ConfigError(no_such_segment(name, index, segments))
        per_segment[index] = per_segment.get(index, 0) + 1
    for index, count in sorted(per_segment.items()):
        room = PCI_SLOTS - (1 if index == 0 else 0)
        if count > room:
            raise ConfigError(f"{where}: {count} PCI devices (with the built-in and default ones) do not fit the "
                              f"{room} slots of segment {index}")


class DeviceManager:
    def __init__(self, vm, memory, mmio, router, registry, segments, vm_config, consoles=None,
                 memory_hotplug=None, handover: dict | None = None, device_memory=None):
        """`segments`: the VM's PciSegments, by id (a single PciSegment: segment 0 alone)."""
        self.vm, self.memory, self.mmio, self.router = vm, memory, mmio, router
        self.device_memory = device_memory      # plugvm.device_memory.DeviceMemory (None: devices own no ranges)
        self.registry = registry
        self.segments: list[PciSegment] = [segments] if isinstance(segments, PciSegment) else list(segments)
        self.vm_config = vm_config
        self.consoles = consoles
        self.memory_hotplug = memory_hotplug
        self.handover = handover if handover is not None else {}     # device id → the last boot's handover
        self.devices: dict[str, Attached] = {}
        self._counter = 0
        # Held for changes to `devices` and slots; an API thread adds and asks for
        # removals, a vCPU thread ejects.
        self._lock = threading.RLock()

    def boot_devices(self) -> list[tuple[object, object]]:
        return boot_devices(self.registry, self.vm_config)

    def attach_boot_devices(self) -> None:
        wanted = self.boot_devices()
        taken = {c.id for _, c in wanted if getattr(c, "id", None)}
        for device_type, config in wanted:
            if getattr(config, "pci_device_id", None) is not None:
                self._segment_of(device_type, config).allocate_slot(config.pci_device_id)
        for device_type, config in wanted:
            self.add(device_type, config, reserved=True, taken=taken)

    def next_id(self, prefix: str, taken: set = frozenset()) -> str:
        # One counter for every prefix, skipping names in use (vmm/src/device_manager.rs next_device_name).
        while True:
            name = f"{prefix}{self._counter}"
            self._counter += 1
            if name not in taken and name not in self.devices:
                return name

    def add(self, device_type, config, *, reserved: bool = False, taken: set = frozenset(),
            bar_64bit: bool = False) -> PciDeviceInfo:
        """Build the device and put it in a slot: its explicit pci_device_id (reserved
        already when `reserved`), else the lowest free one. On any failure nothing of it
        is left: slot, BAR, bus range, fds and threads are released, and the error raised."""
        with self._lock:
            device_id = (getattr(config, "id", None) or device_type.fixed_id
                         or self.next_id(device_type.id_prefix, taken))
            if device_id in self.devices:
                raise DeviceError(f"{device_type.cli_option}: a device with id {device_id!r} already exists")
            explicit = getattr(config, "pci_device_id", None)
            segment = self._segment_of(device_type, config)
            try:
                slot = explicit if (explicit is not None and reserved) else segment.allocate_slot(explicit)
            except SlotError as e:
                raise DeviceError(f"pci_device_id={explicit}: {e}" if explicit is not None else str(e)) from e
            bar = window = None
            device = transport = None
            try:
                window = segment.mem64 if bar_64bit else segment.mem32
                bar = window.allocate(BAR0_SIZE, VIRTIO_BAR_ALIGNMENT)
                ranges = self.device_memory.for_device(device_id) if self.device_memory is not None else None
                device = device_type.create(config, DeviceEnv(self.vm_config, self.consoles, self.memory_hotplug,
                                                              self.handover.pop(device_id, None), bar_64bit,
                                                              guest_ranges=ranges))
                transport = VirtioPciDevice(device, device_id, self.memory, self.vm, self.router, bar, bar_64bit)
                device = None           # the transport owns it now
                self.mmio.insert(bar, BAR0_SIZE, transport)
                segment.attach(slot, transport)
            except BaseException:
                if transport is not None:
                    try:
                        self.mmio.remove(bar)
                    except ValueError:
                        pass
                    transport.close()
                if device is not None:
                    device.close()
                self._release_ranges(device_id)
                if bar is not None:
                    window.free(bar)
                segment.free_slot(slot)
                raise
            self.devices[device_id] = attached = Attached(device_id, device_type, slot, transport, bar, window,
                                                          segment=segment.segment_id)
            transport.config.on_bar_moved = lambda index, old, new: self._bar_moved(attached, new)
        info = PciDeviceInfo(device_id, self._bdf(segment.segment_id, slot))
        log.info("device added", id=device_id, bdf=info.bdf, type=device_type.name)
        self.registry.notify("plugvm_device_added", device_id=device_id, bdf=info.bdf, device_type=device_type,
                             device_config=config, hotplug=bar_64bit)
        return info

    def _bar_moved(self, attached: Attached, new: int) -> None:
        """The guest reprogrammed BAR0 (on its vCPU thread; Linux re-assigns hot-added
        devices' BARs in its own order): move the bus range, the allocation and the
        notify addresses there. A place outside the windows, or on another device's
        BAR, is refused: the device keeps decoding where it was, so a hostile guest
        breaks only its own device."""
        with self._lock:
            if self.devices.get(attached.id) is not attached or new == attached.bar:
                return
            segment = self.segments[attached.segment]
            window = next((w for w in (segment.mem32, segment.mem64)
                           if w.base <= new and new + BAR0_SIZE <= w.end), None)
            try:
                if window is None:
                    raise AllocationError(f"{new:#x} is outside the PCI windows")
                window.allocate(BAR0_SIZE, BAR0_SIZE, at=new)
            except AllocationError as e:
                log.warning("guest moved a BAR where it cannot go; it stays where it was", id=attached.id,
                            to=hex(new), error=str(e))
                return
            old, old_window = attached.bar, attached.window
            self.mmio.remove(old)
            try:
                self.mmio.insert(new, BAR0_SIZE, attached.transport)
            except BusError as e:
                self.mmio.insert(old, BAR0_SIZE, attached.transport)
                window.free(new)
                log.warning("guest moved a BAR onto another range; it stays where it was", id=attached.id,
                            to=hex(new), error=str(e))
                return
            attached.transport.move_bar(new)
            old_window.free(old)
            attached.bar, attached.window = new, window
        log.info("BAR moved", id=attached.id, old=hex(old), new=hex(new))

    def request_removal(self, device_id: str) -> Attached:
        """Mark a device for removal and return it (the caller tells the guest). Raises
        UnknownDeviceError, RemovalPendingError or RemovalNotAllowedError, changing nothing."""
        with self._lock:
            attached = self.devices.get(device_id)
            if attached is None:
                raise UnknownDeviceError(f"no device has id {device_id!r}")
            if attached.removing:
                raise RemovalPendingError(f"the removal of {device_id} is already pending: the guest has not "
                                          f"ejected it yet")
            if not getattr(attached.type, "removable", True):
                raise RemovalNotAllowedError(f"{device_id} is a built-in {attached.type.name} device and cannot be "
                                             f"removed")
            attached.removing = True
            return attached

    def eject(self, segment_id: int, slot: int) -> None:
        """The guest ejected `slot` of segment `segment_id` (B0EJ, on its vCPU thread).
        Only a device whose removal was asked for is released; any other bit (an empty
        slot, a device nobody asked to remove, a slot that does not exist) is logged and
        ignored, so a guest cannot take away what the VM's config says it has, nor free
        anything twice."""
        with self._lock:
            attached = next((a for a in self.devices.values() if (a.segment, a.slot) == (segment_id, slot)), None)
            if attached is None or not attached.removing:
                log.warning("guest ejected a slot with no pending removal; ignored", segment=segment_id, slot=slot,
                            device=attached.id if attached else None)
                return
            del self.devices[attached.id]
            segment = self.segments[segment_id]
            # Off the buses first, so that no vCPU reaches the device while it goes.
            self.mmio.remove(attached.bar)
            segment.detach(slot)
        try:
            attached.transport.close()
        except Exception:
            log.exception("closing an ejected device failed", id=attached.id)
        finally:
            self._release_ranges(attached.id)
            with self._lock:
                attached.window.free(attached.bar)
                segment.free_slot(slot)
            attached.gone.set()
        bdf = self._bdf(segment_id, slot)
        log.info("device ejected", id=attached.id, bdf=bdf)
        self.registry.notify("plugvm_device_removed", device_id=attached.id, bdf=bdf, device_type=attached.type)

    def device_tree(self) -> dict:
        """cloud-hypervisor's device tree: each virtio device under its `_virtio-pci-<id>`
        node, which holds the PCI BDF. A device whose removal is pending says so."""
        tree = {}
        for device_id, attached in list(self.devices.items()):
            bar = attached.bar
            parent = f"_virtio-pci-{device_id}"
            # cloud-hypervisor lists a device's own guest range (pmem) as an MmioAddressRange.
            ranges = self.device_memory.ranges(device_id) if self.device_memory is not None else []
            resources = [{"MmioAddressRange": {"base": r.guest_addr, "size": r.size}} for r in ranges]
            tree[device_id] = {"id": device_id, "resources": resources, "parent": parent, "children": []}
            tree[parent] = {"id": parent, "resources": [{"PciBar": {"index": 0, "base": bar, "size": BAR0_SIZE,
                                                                     "type": "Mmio32" if bar < 1 << 32 else "Mmio64",
                                                                     "prefetchable": False}}],
                            "children": [device_id], "pci_bdf": self._bdf(attached.segment, attached.slot)}
            if attached.removing:
                tree[device_id]["pending_removal"] = tree[parent]["pending_removal"] = True
        return tree

    def counters(self) -> dict:
        """Per-device counters, for devices that keep them (a `counters` dict of integers)."""
        return {device_id: dict(a.transport.device.counters) for device_id, a in list(self.devices.items())
                if isinstance(getattr(a.transport.device, "counters", None), dict)}

    def _release_ranges(self, device_id: str) -> None:
        """Unmap what the device still holds of guest-physical memory (after its transport
        and device are closed, so that no I/O thread uses it): a plugin that forgot its
        ranges leaks no slot and no address."""
        if self.device_memory is None:
            return
        try:
            self.device_memory.release(device_id)
        except Exception:
            log.exception("releasing a device's guest ranges failed", id=device_id)

    @staticmethod
    def _bdf(segment_id: int, slot: int) -> str:
        return f"{segment_id:04x}:00:{slot:02x}.0"

    def _segment_of(self, device_type, config) -> PciSegment:
        """The PciSegment a device's config asks for; DeviceError for one the VM lacks."""
        index = pci_segment_of(config)
        if not 0 <= index < len(self.segments):
            raise DeviceError(no_such_segment(device_type.cli_option, index, len(self.segments)))
        return self.segments[index]

    def close(self, handover: dict | None = None) -> None:
        """Close every device. For a guest reboot, `handover` collects what each device
        hands to its next boot (VirtioDevice.handover()), asked before it is reset."""
        with self._lock:
            attached, self.devices = list(self.devices.values()), {}
        for a in attached:
            if handover is not None:
                try:
                    kept = a.transport.device.handover()
                except Exception:
                    log.exception("a device's handover failed", id=a.id)
                    kept = None
                if kept is not None:
                    handover[a.id] = kept
            try:
                a.transport.close()
            except Exception:
                log.exception("closing a device failed", id=a.id)
            self._release_ranges(a.id)
            a.gone.set()
