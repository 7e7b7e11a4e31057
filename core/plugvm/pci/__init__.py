"""PCI: configuration space, MSI-X, the segment with its slots and BAR windows.

Modules (each docstring holds its API):
    allocator     AddressAllocator(base, size), AllocationError — BAR windows
    config_space  PciConfigSpace, Bar, PciConfigError — a function's 4 KiB config space
    msix          Msix, MsixEntry, MsixLayoutError — MSI-X capability, table and PBA
    host_bridge   HostBridge — 8086:0d57 at 00:00.0
    segment       PciSegment, SlotError — slots, CF8/CFC and ECAM access, mem32/mem64 windows

Layering: pci sits above interrupts and below virtio. A device on a segment is any
object with a `.config: PciConfigSpace`; the owner (the virtio-pci transport) maps
its BARs on the MMIO bus and routes MSI-X through the on_change/on_pending callbacks.
"""
