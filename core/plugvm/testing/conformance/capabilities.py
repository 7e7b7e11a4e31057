"""The capabilities a device declares (the `capabilities` fixture), and the one way a
test asks for one: a test needing what the device lacks is skipped with a reason that
names the capability, and only that test."""

from __future__ import annotations

import pytest

OPTIONS = "options"     # configured by its own option text and JSON (not only by another part of the VM config)
VIRTIO = "virtio"       # create() builds a plugvm.virtio.device.VirtioDevice
QUEUES = "queues"       # its queues are served in-process, by queue_notify() (not external_queues)
HOTPLUG = "hotplug"     # hot-added through its api_verb
REMOVE = "remove"       # taken out of a running VM by vm.remove-device
GUEST = "guest"         # the author has the lab: a real guest binds its driver (GuestTests)

ALL = frozenset({OPTIONS, VIRTIO, QUEUES, HOTPLUG, REMOVE, GUEST})
DEFAULT = ALL - {GUEST}


def require(capabilities, capability: str, device: str) -> None:
    """Skip the calling test unless `capability` is declared."""
    if capability not in ALL:
        raise ValueError(f"unknown conformance capability {capability!r} (known: {', '.join(sorted(ALL))})")
    if capability not in capabilities:
        pytest.skip(f"device type {device!r} does not declare the {capability!r} capability")
