"""DeviceConformance: every device test class in one base, for a plugin author who
subclasses one class and declares capabilities for what does not apply."""

from __future__ import annotations

from plugvm.testing.conformance.config import ConfigTests
from plugvm.testing.conformance.device_type import DeviceTypeTests
from plugvm.testing.conformance.hotplug import HotplugTests
from plugvm.testing.conformance.lifecycle import LifecycleTests
from plugvm.testing.conformance.virtio import VirtioDeviceTests


class DeviceConformance(DeviceTypeTests, ConfigTests, LifecycleTests, VirtioDeviceTests, HotplugTests):
    """The whole device suite, but the real-guest tests (GuestTests, which need the lab)."""
