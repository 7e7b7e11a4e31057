"""The virtio-pci common configuration structure (virtio 1.2 §4.1.4.3): feature
negotiation, device status, and per-queue setup registers, as plain state.

The transport (pci_transport.py) maps it into BAR0 and acts on status changes;
this module only keeps the registers and checks the guest's accesses.
"""

from __future__ import annotations

from dataclasses import dataclass

# Device status bits (§2.1).
ACKNOWLEDGE, DRIVER, DRIVER_OK, FEATURES_OK = 1, 2, 4, 8
DEVICE_NEEDS_RESET, FAILED = 0x40, 0x80
NO_VECTOR = 0xFFFF
SIZE = 0x38                 # up to queue_device; plugvm offers no queue_reset / notification data

# offset → (name, width, writable)
REGISTERS = {
    0x00: ("device_feature_select", 4, True), 0x04: ("device_feature", 4, False),
    0x08: ("driver_feature_select", 4, True), 0x0C: ("driver_feature", 4, True),
    0x10: ("config_msix_vector", 2, True), 0x12: ("num_queues", 2, False),
    0x14: ("device_status", 1, True), 0x15: ("config_generation", 1, False),
    0x16: ("queue_select", 2, True), 0x18: ("queue_size", 2, True),
    0x1A: ("queue_msix_vector", 2, True), 0x1C: ("queue_enable", 2, True),
    0x1E: ("queue_notify_off", 2, False),
    0x20: ("queue_desc_lo", 4, True), 0x24: ("queue_desc_hi", 4, True),
    0x28: ("queue_driver_lo", 4, True), 0x2C: ("queue_driver_hi", 4, True),
    0x30: ("queue_device_lo", 4, True), 0x34: ("queue_device_hi", 4, True),
}


@dataclass
class QueueState:
    max_size: int
    size: int = 0
    msix_vector: int = NO_VECTOR
    enabled: bool = False
    desc: int = 0
    driver: int = 0
    device: int = 0

    def __post_init__(self):
        self.size = self.max_size


class CommonConfig:
    """Register state. read()/write() take any access the guest makes; accesses that
    are not exactly one register (wrong width or offset) read as zero and are ignored,
    except 64-bit queue addresses, which the driver may write as two 32-bit halves."""

    def __init__(self, device_features: int, queue_sizes: tuple[int, ...]):
        self.device_features = device_features
        self.queues = [QueueState(size) for size in queue_sizes]
        self.reset()

    def reset(self) -> None:
        self.device_feature_select = self.driver_feature_select = 0
        self.driver_features = 0
        self.config_msix_vector = NO_VECTOR
        self.status = 0
        self.config_generation = 0
        self.queue_select = 0
        for q in self.queues:
            q.size, q.msix_vector, q.enabled, q.desc, q.driver, q.device = q.max_size, NO_VECTOR, False, 0, 0, 0

    @property
    def selected(self) -> QueueState | None:
        return self.queues[self.queue_select] if self.queue_select < len(self.queues) else None

    def read(self, offset: int, size: int) -> int:
        register = REGISTERS.get(offset)
        if register is None or size != register[1]:
            return 0
        name = register[0]
        q = self.selected
        match name:
            case "device_feature_select":
                return self.device_feature_select
            case "device_feature":
                return (self.device_features >> (32 * self.device_feature_select)) & 0xFFFFFFFF \
                    if self.device_feature_select < 2 else 0
            case "driver_feature_select":
                return self.driver_feature_select
            case "driver_feature":
                return (self.driver_features >> (32 * self.driver_feature_select)) & 0xFFFFFFFF \
                    if self.driver_feature_select < 2 else 0
            case "config_msix_vector":
                return self.config_msix_vector
            case "num_queues":
                return len(self.queues)
            case "device_status":
                return self.status
            case "config_generation":
                return self.config_generation
            case "queue_select":
                return self.queue_select
        if q is None:
            return 0
        match name:
            case "queue_size":
                return q.size
            case "queue_msix_vector":
                return q.msix_vector
            case "queue_enable":
                return int(q.enabled)
            case "queue_notify_off":
                return self.queue_select
            case _:
                field, half = name.rsplit("_", 1)
                value = getattr(q, field.removeprefix("queue_"))
                return value & 0xFFFFFFFF if half == "lo" else value >> 32

    def write(self, offset: int, size: int, value: int) -> str | None:
        """Apply a write; returns the register's name when the transport must act
        ("device_status", "queue_enable", "config_msix_vector", "queue_msix_vector"), else None."""
        register = REGISTERS.get(offset)
        if register is None or size != register[1] or not register[2]:
            return None
        name = register[0]
        q = self.selected
        match name:
            case "device_feature_select":
                self.device_feature_select = value
            case "driver_feature_select":
                self.driver_feature_select = value
            case "driver_feature":
                # Ignored once FEATURES_OK is set (§2.2): the device has accepted the set.
                if self.driver_feature_select < 2 and not self.status & FEATURES_OK:
                    shift = 32 * self.driver_feature_select
                    self.driver_features = (self.driver_features & ~(0xFFFFFFFF << shift)) | (value << shift)
            case "config_msix_vector":
                self.config_msix_vector = value
                return name
            case "device_status":
                return name          # the transport decides what the new status means
            case "queue_select":
                self.queue_select = value
            case _:
                if q is None or (q.enabled and name != "queue_msix_vector"):
                    return None      # an enabled queue's setup is frozen (§4.1.4.3.2)
                if name == "queue_size":
                    # A power of two no larger than the device's maximum; anything else is refused
                    # now (kept at the old value) rather than breaking the queue later.
                    if 0 < value <= q.max_size and not value & (value - 1):
                        q.size = value
                elif name == "queue_msix_vector":
                    q.msix_vector = value
                    return name
                elif name == "queue_enable":
                    if value == 1:
                        return name
                else:
                    field, half = name.rsplit("_", 1)
                    attribute = field.removeprefix("queue_")
                    old = getattr(q, attribute)
                    new = (old & ~0xFFFFFFFF) | value if half == "lo" else (old & 0xFFFFFFFF) | (value << 32)
                    setattr(q, attribute, new)
        return None


def unpack(data) -> int:
    return int.from_bytes(bytes(data), "little")


def pack(value: int, size: int) -> bytes:
    return (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little")

