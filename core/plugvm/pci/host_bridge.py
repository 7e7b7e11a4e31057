"""The host bridge at 00:00.0, as cloud-hypervisor presents it (pci/src/bus.rs
PciRoot: Intel 8086:0d57, class 06/00). It has no BARs and no capabilities; it is
there so that Linux finds a root device in slot 0, as on cloud-hypervisor.

API:
    HostBridge()        .config: PciConfigSpace
"""

from __future__ import annotations

from plugvm.pci.config_space import PciConfigSpace

VENDOR_INTEL, DEVICE_HOST_BRIDGE = 0x8086, 0x0D57
CLASS_BRIDGE, SUBCLASS_HOST = 0x06, 0x00


class HostBridge:
    """The segment's root device; only its config space exists."""

    def __init__(self) -> None:
        self.config = PciConfigSpace(vendor_id=VENDOR_INTEL, device_id=DEVICE_HOST_BRIDGE,
                                     class_code=CLASS_BRIDGE, subclass=SUBCLASS_HOST)
