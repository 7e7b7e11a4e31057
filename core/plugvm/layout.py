"""The x86-64 guest physical address map, cloud-hypervisor's (arch/src/x86_64/layout.rs;
shared/reference/cloud-hypervisor-notes.md §3h), kept so that hotplug registers,
AML and tooling written for cloud-hypervisor see the same machine."""

from plugvm.errors import PlugvmError

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


class LayoutError(PlugvmError, ValueError):
    """An address space that cannot hold what was asked of it."""

# Low memory.
GDT_START = 0x500
IDT_START = 0x520
PVH_INFO_START = 0x6000
PVH_MODLIST_START = 0x6040
ZERO_PAGE_START = 0x7000          # bzImage boot_params (and the PVH memory map)
BOOT_STACK_POINTER = 0x8FF0
CMDLINE_START = 0x20000
CMDLINE_MAX_SIZE = 64 * KiB
EBDA_START = 0xA0000              # end of low RAM; the ACPI tables start here
RSDP_POINTER = EBDA_START
HIGH_RAM_START = 1 * MiB          # where the kernel is loaded

# The 32-bit hole below 4 GiB.
MEM_32BIT_RESERVED_START = 0xC000_0000
MEM_32BIT_DEVICES_START = MEM_32BIT_RESERVED_START
MEM_32BIT_DEVICES_SIZE = 640 * MiB
PCI_MMCONFIG_START = 0xE800_0000
PCI_MMCONFIG_SIZE = 256 * MiB
KVM_TSS_ADDRESS = 0xF800_0000
KVM_IDENTITY_MAP_START = 0xF800_3000
IOAPIC_START = 0xFEC0_0000
APIC_START = 0xFEE0_0000
RAM_64BIT_START = 4 * GiB

# Legacy I/O ports.
SERIAL_PORT_COM1 = 0x3F8
SERIAL_IRQ_COM1 = 4
I8042_PORT = 0x61                 # 0x61..0x64: port B and the keyboard controller
CMOS_PORT = 0x70
ACPI_SLEEP_PORT = 0x600           # sleep control/status and reset register (FADT)
ACPI_PM_TIMER_PORT = 0x608

# PCI segment 0.
PCI_CONFIG_IO_PORT = 0xCF8        # CONFIG_ADDRESS, then CONFIG_DATA at 0xCFC
PCI_MMCONFIG_SEGMENT_SIZE = 1 * MiB   # ECAM of bus 0 only
PCI_MEM64_SIZE = 64 * GiB         # the 64-bit BAR window (cloud-hypervisor splits what is left of the
                                  # address space; a fixed window keeps it inside any guest's phys bits)


def pci_mem64_start(ram_top: int) -> int:
    """The 64-bit BAR window starts after RAM and the memory-hotplug window (ram_top is
    where the later ends), 4 GiB aligned."""
    top = max(RAM_64BIT_START, ram_top)
    return (top + 4 * GiB - 1) // (4 * GiB) * (4 * GiB)


# The platform MMIO area at the top of the guest physical address space (§3h): the GED
# and the hotplug controllers' registers, published to the guest only through the AML.
PLATFORM_AREA_SIZE = 1 * MiB      # PLATFORM_DEVICE_AREA_SIZE
PLATFORM_AREA_GAP = 64 * KiB      # left free at the very top
PLATFORM_PAGE = 4 * KiB
# cloud-hypervisor's allocation order, top-down, a page each: memory hotplug (when its
# method has registers: MEMORY_HOTPLUG goes first), PCI hotplug, CPU hotplug, the GED.
MEMORY_HOTPLUG = "memory_hotplug"
PLATFORM_DEVICES = ("pci_hotplug", "cpu_hotplug", "ged")


def platform_area(phys_bits: int) -> tuple[int, int]:
    """(start, size) of the platform area: [2**phys_bits - 64 KiB - 1 MiB, 2**phys_bits - 64 KiB)."""
    if not 32 <= phys_bits <= 52:
        raise LayoutError(f"platform_area: phys_bits={phys_bits} is not 32-52")
    end = (1 << phys_bits) - PLATFORM_AREA_GAP
    return end - PLATFORM_AREA_SIZE, PLATFORM_AREA_SIZE


def platform_devices(phys_bits: int, names: tuple[str, ...] = PLATFORM_DEVICES) -> dict[str, int]:
    """The page each platform device's registers start at, allocated top-down in the
    order given (cloud-hypervisor's, so that its AML and ours agree on addresses)."""
    start, size = platform_area(phys_bits)
    if len(names) * PLATFORM_PAGE > size:
        raise LayoutError(f"{len(names)} platform devices do not fit the {size >> 10} KiB platform area")
    top = start + size
    return {name: top - (i + 1) * PLATFORM_PAGE for i, name in enumerate(names)}
