"""virtio 1.x: the split virtqueue engine, the device interface plugins implement,
and the PCI transport that owns devices."""
