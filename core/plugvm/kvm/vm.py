"""A KVM virtual machine file descriptor."""

from __future__ import annotations

from plugvm.kvm._kvm import ffi, lib
from plugvm.kvm.fd import KvmFd


class Vm(KvmFd):
    """One VM: memory slots, in-kernel irqchip and PIT, interrupts and eventfds."""

    def __init__(self, kvm, fd: int):
        super().__init__(fd)
        self.kvm = kvm

    def map_memory(self, slot: int, guest_phys_addr: int, buffer, readonly: bool = False) -> None:
        """Map a host buffer (an mmap of guest RAM) into the guest at guest_phys_addr."""
        pointer = ffi.from_buffer(buffer)
        host_addr = int(ffi.cast("uintptr_t", pointer))
        ffi.release(pointer)  # the mapping itself stays; KVM holds no Python reference
        self.set_memory_region(slot, guest_phys_addr, len(buffer), host_addr, readonly)

    def unmap_memory(self, slot: int) -> None:
        """Delete memory slot `slot` (KVM_SET_USER_MEMORY_REGION of size 0): the guest no
        longer reaches its host mapping, which the caller may then unmap."""
        self.set_memory_region(slot, 0, 0, 0)

    def set_memory_region(self, slot: int, guest_phys_addr: int, size: int, host_addr: int,
                          readonly: bool = False) -> None:
        """Map size bytes at host_addr into the guest at guest_phys_addr (size 0 deletes the slot)."""
        region = ffi.new("struct kvm_userspace_memory_region *", {
            "slot": slot, "flags": lib.KVM_MEM_READONLY if readonly else 0, "guest_phys_addr": guest_phys_addr,
            "memory_size": size, "userspace_addr": host_addr})
        self.ioctl("KVM_SET_USER_MEMORY_REGION", region)

    def set_tss_addr(self, addr: int) -> None:
        self.ioctl("KVM_SET_TSS_ADDR", addr)

    def set_identity_map_addr(self, addr: int) -> None:
        self.ioctl("KVM_SET_IDENTITY_MAP_ADDR", ffi.new("uint64_t *", addr))

    def create_irqchip(self) -> None:
        """The in-kernel PIC, IOAPIC and per-vCPU LAPICs."""
        self.ioctl("KVM_CREATE_IRQCHIP")

    def create_pit2(self) -> None:
        """The in-kernel i8254 PIT; the speaker port is left to KVM's dummy."""
        self.ioctl("KVM_CREATE_PIT2", ffi.new("struct kvm_pit_config *", {"flags": lib.KVM_PIT_SPEAKER_DUMMY}))

    def enable_cap(self, cap: str, *args: int) -> None:
        self.ioctl("KVM_ENABLE_CAP", ffi.new("struct kvm_enable_cap *", {"cap": getattr(lib, cap),
                                                                          "args": list(args)}))

    def irq_line(self, irq: int, level: int) -> None:
        """Set an irqchip input (a GSI) to level."""
        self.ioctl("KVM_IRQ_LINE", ffi.new("struct kvm_irq_level *", {"irq": irq, "level": level}))

    def set_gsi_routing(self, routes: list[tuple]) -> None:
        """Replace KVM's whole GSI routing table. Each route is (gsi, chip, pin) with chip
        "pic_master", "pic_slave" or "ioapic", or (gsi, "msi", (address, data)) for an
        MSI message (what an MSI-X table entry holds)."""
        chips = {"pic_master": lib.KVM_IRQCHIP_PIC_MASTER, "pic_slave": lib.KVM_IRQCHIP_PIC_SLAVE,
                 "ioapic": lib.KVM_IRQCHIP_IOAPIC}
        table = ffi.new("struct kvm_irq_routing *", {"entries": len(routes)})
        table.nr = len(routes)
        for i, (gsi, chip, target) in enumerate(routes):
            entry = table.entries[i]
            entry.gsi = gsi
            if chip == "msi":
                address, data = target
                entry.type = lib.KVM_IRQ_ROUTING_MSI
                entry.u.msi.address_lo = address & 0xFFFFFFFF
                entry.u.msi.address_hi = address >> 32
                entry.u.msi.data = data
            else:
                entry.type = lib.KVM_IRQ_ROUTING_IRQCHIP
                entry.u.irqchip.irqchip = chips[chip]
                entry.u.irqchip.pin = target
        self.ioctl("KVM_SET_GSI_ROUTING", table)

    def irqfd(self, eventfd: int, gsi: int, deassign: bool = False) -> None:
        """Writes to eventfd inject gsi without a trip through userspace."""
        self.ioctl("KVM_IRQFD", ffi.new("struct kvm_irqfd *", {
            "fd": eventfd, "gsi": gsi, "flags": lib.KVM_IRQFD_FLAG_DEASSIGN if deassign else 0}))

    def ioeventfd(self, eventfd: int, addr: int, length: int, pio: bool, datamatch: int | None = None,
                  deassign: bool = False) -> None:
        """Guest writes to addr signal eventfd instead of exiting to userspace."""
        flags = (lib.KVM_IOEVENTFD_FLAG_PIO if pio else 0) | (lib.KVM_IOEVENTFD_FLAG_DEASSIGN if deassign else 0)
        if datamatch is not None:
            flags |= lib.KVM_IOEVENTFD_FLAG_DATAMATCH
        self.ioctl("KVM_IOEVENTFD", ffi.new("struct kvm_ioeventfd *", {
            "datamatch": datamatch or 0, "addr": addr, "len": length, "fd": eventfd, "flags": flags}))

    def get_clock(self) -> int:
        """The guest's kvmclock, in nanoseconds."""
        data = ffi.new("struct kvm_clock_data *")
        self.ioctl("KVM_GET_CLOCK", data)
        return data.clock

    def set_clock(self, clock: int) -> None:
        """Set the guest's kvmclock (resuming a paused VM where its clock stopped)."""
        self.ioctl("KVM_SET_CLOCK", ffi.new("struct kvm_clock_data *", {"clock": clock}))

    def create_vcpu(self, index: int, apic_id: int | None = None):
        """vCPU `index` (its thread's name, vcpu<index>); KVM's vCPU id is its APIC id,
        the index when not given."""
        from plugvm.kvm.vcpu import Vcpu

        return Vcpu(self, index, self.ioctl("KVM_CREATE_VCPU", index if apic_id is None else apic_id))
