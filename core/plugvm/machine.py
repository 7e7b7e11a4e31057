"""One boot of a VM: KVM objects, memory, platform devices, vCPUs, built from a VmConfig.

A guest reboot throws the Machine away and builds a new one from the same
configuration (vmm.py), so nothing of a previous boot can leak into the next.
"""

from __future__ import annotations

import os
import threading
import time

from plugvm import acpi, exit_stats, layout
from plugvm.boot import reset_vector
from plugvm.boot.cpu_state import setup_boot_vcpu
from plugvm.boot.loader import load_kernel
from plugvm.bus import Bus
from plugvm.cpu import cpuid, lapic, msrs
from plugvm.cpu.topology import Topology
from plugvm.devices.acpi_pm import PmTimer, SleepResetRegister
from plugvm.devices.cmos import Cmos
from plugvm.devices.i8042 import I8042
from plugvm.acpi.ged_aml import ged_aml
from plugvm.acpi.cpu_aml import cpu_hotplug_aml
from plugvm.acpi.madt import processor_entry
from plugvm.devices.cpu_hotplug import REGISTERS_SIZE as CPU_HOTPLUG_SIZE, CpuHotplugController
from plugvm.devices.ged import (CPU_DEVICES_CHANGED, GED_SIZE, MEMORY_DEVICES_CHANGED, PCI_DEVICES_CHANGED,
                                POWER_BUTTON_CHANGED, Ged)
from plugvm.devices.pci_hotplug import REGISTERS_SIZE as PCI_HOTPLUG_SIZE, PciHotplugController
from plugvm.devices.serial import Serial
from plugvm.device_manager import DeviceManager
from plugvm.device_memory import DeviceMemory
from plugvm.errors import PlugvmError
from plugvm.interrupts import InterruptRouter
from plugvm.kvm import KvmError
from plugvm.logs import get_logger
from plugvm.memory import Backing, GuestMemory
from plugvm.memory_hotplug import MemoryHotplugEnv
from plugvm.memory_slots import MemorySlots
from plugvm.pci.segment import PciSegment, segment_windows
from plugvm.vcpu_thread import VcpuThread

log = get_logger(__name__)
FPU_CONTROL_WORD = 0x37F     # the x87 default after FNINIT
MXCSR_DEFAULT = 0x1F80       # all SSE exceptions masked


IOAPIC_PINS = 24
GED_GSI = 13          # the first GSI after the PCI INTx lines 5-12, as in cloud-hypervisor


def legacy_routes() -> list[tuple[int, str, int]]:
    """ISA interrupts to both 8259s and the IOAPIC, with the PIT's GSI 0 on IOAPIC pin 2,
    as on a PC and as the MADT's interrupt source override says (KVM's default
    routing would put it on pin 0)."""
    routes = [(i, "pic_master", i) for i in range(8) if i != 2]
    routes += [(i, "pic_slave", i - 8) for i in range(8, 16)]
    routes += [(i, "ioapic", 2 if i == 0 else i) for i in range(IOAPIC_PINS) if i != 2]
    return routes


class AffinityError(PlugvmError, ValueError):
    """--cpus affinity names host CPUs this process may not run on."""


class CpuRemovalPending(PlugvmError, RuntimeError):
    """A resize while the guest has not ejected the CPUs an earlier one removed."""


class Outcome:
    """How the run ended: 'poweroff', 'reset' or 'error' (with a message). First one wins;
    on_set (the VMM's wake-up) is called once it is set."""

    def __init__(self, on_set=None):
        self._event = threading.Event()
        self.kind: str | None = None
        self.message = ""
        self._on_set = on_set

    def set(self, kind: str, message: str = "") -> None:
        log.debug("vm outcome", kind=kind, message=message)
        if not self._event.is_set():
            self.kind, self.message = kind, message
            self._event.set()
            if self._on_set is not None:
                self._on_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._event.wait(timeout)


class Machine:
    """Builds the VM; run() starts the vCPUs and returns the Outcome once they stopped."""

    _counting = None            # exit_stats.CountingBus pair, with PLUGVM_EXIT_STATS=1

    def __init__(self, kvm, config, consoles, supported_cpuid, registry, on_outcome=None, handover=None):
        self.config = config
        self.registry = registry
        self.outcome = Outcome(on_outcome)
        self.threads: dict[int, VcpuThread] = {}      # CPU index → its running thread
        self._paused_clock: int | None = None
        self.paused = False
        self.vm = kvm.create_vm()
        self.memory = None
        self.memory_hotplug = None                   # this boot's memory_hotplug.MemoryHotplug (hotplug_size)
        self.slots = MemorySlots()                    # KVM memory slots: RAM regions, device ranges
        self.device_memory = None                     # device_memory.DeviceMemory: ranges devices own
        self.devices = None
        self.com1 = None                              # devices.serial.Serial, unless --serial off
        self.vcpus: dict[int, object] = {}           # CPU index → its KVM vCPU (never destroyed)
        self.present = 0                              # CPUs running now (0..present-1)
        self._handover = handover                     # what the last boot's devices handed over, by id
        self._announced: list = []                    # regions plugvm_memory_added() told plugins of
        try:
            self._build(kvm, consoles, supported_cpuid)
        except BaseException:
            self.close()
            raise

    def _build(self, kvm, consoles, supported_cpuid) -> None:
        cfg, vm = self.config, self.vm
        vm.set_tss_addr(layout.KVM_TSS_ADDRESS)
        vm.set_identity_map_addr(layout.KVM_IDENTITY_MAP_START)
        vm.create_irqchip()
        self.router = InterruptRouter(vm, legacy_routes())
        vm.create_pit2()
        if kvm.check_extension("KVM_CAP_EXIT_ON_EMULATION_FAILURE"):
            # Emulation failures then report the instruction bytes (see vcpu_thread).
            vm.enable_cap("KVM_CAP_EXIT_ON_EMULATION_FAILURE", 1)

        self.memory = GuestMemory(cfg.memory.size, backing=Backing.of(cfg.memory))
        for region in self.memory.regions:
            self._map(region)

        self.pio, self.mmio = Bus("pio"), Bus("mmio")
        if cfg.serial.mode != "off":
            self.com1 = com1 = Serial(consoles.serial.write, lambda: self._pulse(layout.SERIAL_IRQ_COM1))
            self.pio.insert(layout.SERIAL_PORT_COM1, 8, com1)
            consoles.serial.attach(com1)
        self.pio.insert(layout.I8042_PORT, 4, I8042(self.request_reset))
        self.pio.insert(layout.CMOS_PORT, 2, Cmos())
        self.pio.insert(layout.ACPI_SLEEP_PORT, 1, SleepResetRegister(self.request_poweroff, self.request_reset))
        self.pio.insert(layout.ACPI_PM_TIMER_PORT, 4, PmTimer())

        # A memory-hotplug method reserves its window after boot RAM; the 64-bit PCI
        # window goes after that.
        method = self._memory_method()
        window = method.reserve(self.memory.boot_end, cfg.memory) if method is not None else None
        mem64_start = layout.pci_mem64_start(window.end if window is not None else self.memory.boot_end)
        # The GED and the hotplug registers go in the platform area, which cloud-hypervisor
        # fills top-down; only the AML says where they are.
        bits = cpuid.phys_bits(supported_cpuid, cfg.cpus.max_phys_bits)
        if mem64_start + layout.PCI_MEM64_SIZE > layout.platform_area(bits)[0]:
            raise layout.LayoutError(f"--cpus max_phys_bits: a {bits}-bit guest address space cannot hold the RAM, "
                                     f"the memory hotplug area and the 64 GiB PCI window (they end at "
                                     f"{mem64_start + layout.PCI_MEM64_SIZE:#x})")
        with_registers = method is not None and method.registers_size > 0
        if with_registers and method.registers_size > layout.PLATFORM_PAGE:
            raise layout.LayoutError(f"memory hotplug method {method.name}: {method.registers_size} bytes of "
                                     f"registers do not fit a {layout.PLATFORM_PAGE}-byte platform page")
        self.platform = platform = layout.platform_devices(
            bits, ((layout.MEMORY_HOTPLUG,) if with_registers else ()) + layout.PLATFORM_DEVICES)
        self.ged = Ged(lambda: self._pulse(GED_GSI))
        self.mmio.insert(platform["ged"], GED_SIZE, self.ged)
        if method is not None:
            self.memory_hotplug = method.attach(MemoryHotplugEnv(
                memory=self.memory, config=cfg.memory, window=window,
                registers_addr=platform[layout.MEMORY_HOTPLUG] if with_registers else None,
                add_region=self._add_ram, notify_guest=lambda: self.ged.notify(MEMORY_DEVICES_CHANGED)))
            if with_registers:
                self.mmio.insert(platform[layout.MEMORY_HOTPLUG], method.registers_size,
                                 self.memory_hotplug.registers)

        # Each segment its ECAM MiB and a share of the BAR windows (--platform num_pci_segments).
        windows = segment_windows(cfg.platform.num_pci_segments, mem64_start, layout.PCI_MEM64_SIZE)
        self.segments = [PciSegment(i, mem32=mem32, mem64_start=mem64[0], mem64_size=mem64[1])
                         for i, (mem32, mem64) in enumerate(windows)]
        self.segment = self.segments[0]
        self.pio.insert(layout.PCI_CONFIG_IO_PORT, 8, self.segment.config_io)      # segment 0's only
        for segment in self.segments:
            self.mmio.insert(segment.ecam_base, layout.PCI_MMCONFIG_SEGMENT_SIZE, segment.ecam)
        # Device ranges (virtio-pmem's file) come from segment 0's 64-bit window.
        self.device_memory = DeviceMemory(vm, self.slots, self.segment.mem64)
        self.devices = DeviceManager(vm, self.memory, self.mmio, self.router, self.registry, self.segments, cfg,
                                     consoles=consoles, memory_hotplug=self.memory_hotplug, handover=self._handover,
                                     device_memory=self.device_memory)
        self.devices.attach_boot_devices()

        boot, max_vcpus = cfg.cpus.boot_vcpus, cfg.cpus.max_vcpus
        usable = os.sched_getaffinity(0)
        for pin in cfg.cpus.affinity or ():
            missing = sorted(set(pin.host_cpus) - usable)
            if missing:
                raise AffinityError(f"--cpus affinity: vCPU {pin.vcpu}'s host CPUs {missing} are not CPUs plugvm "
                                    f"may run on ({', '.join(map(str, sorted(usable)))})")
        self.pci_hotplug = PciHotplugController(len(self.segments), self._eject)
        self.mmio.insert(platform["pci_hotplug"], PCI_HOTPLUG_SIZE, self.pci_hotplug)
        pci_aml = acpi.pci_segments_aml([(s.segment_id, s.ecam_base, (s.mem32.base, s.mem32.size),
                                          (s.mem64.base, s.mem64.size)) for s in self.segments],
                                        hotplug_region=(platform["pci_hotplug"], PCI_HOTPLUG_SIZE))
        mcfg = acpi.Mcfg([(s.segment_id, s.ecam_base, 0, 0) for s in self.segments])
        self.cpu_hotplug = CpuHotplugController(max_vcpus, boot, self._eject_vcpu)
        self.mmio.insert(platform["cpu_hotplug"], CPU_HOTPLUG_SIZE, self.cpu_hotplug)
        # The _MAT of each CPU is its MADT structure, Enabled: the two must agree.
        apic_ids = Topology.of(cfg.cpus.topology, max_vcpus).apic_ids(max_vcpus)
        cpu_aml = cpu_hotplug_aml(platform["cpu_hotplug"], max_vcpus,
                                  lambda i: processor_entry(i, max_vcpus, apic_ids[i]).to_bytes())
        memory_aml = self.memory_hotplug.aml() if self.memory_hotplug is not None else []
        memory_scan = self.memory_hotplug is not None and self.memory_hotplug.ged_scan
        # cloud-hypervisor's DSDT order: the device manager's (PCI, GED), the CPUs', the memory's.
        fragments = (*pci_aml, *ged_aml(platform["ged"], GED_GSI, cpus=True, pci=True, memory=memory_scan),
                     *cpu_aml, *memory_aml)
        tables = acpi.build(acpi.AcpiPlatform(boot_cpus=boot, max_cpus=max_vcpus, rsdp_addr=layout.RSDP_POINTER,
                                                 limit=reset_vector.RESET_VECTOR, com1=cfg.serial.mode != "off",
                                                 dsdt_fragments=fragments, extra_tables=(mcfg,), apic_ids=apic_ids))
        self.memory.write(tables.rsdp_addr, tables.blob)
        reset_vector.install(self.memory)
        payload = cfg.payload
        entry = load_kernel(self.memory, payload.kernel, payload.initramfs, payload.cmdline or "", tables.rsdp_addr)

        self._supported_cpuid = supported_cpuid
        for index in range(boot):
            self._create_vcpu(index)
        self.present = boot
        setup_boot_vcpu(self.vcpus[0], self.memory, entry)

    def _create_vcpu(self, index: int):
        """A KVM vCPU configured as every one is at boot: CPUID with its APIC id and the
        topology, MSRs, LINT0/1, FPU. All but CPU 0 wait for the guest's INIT-SIPI."""
        cpus = self.config.cpus
        topology = Topology.of(cpus.topology, cpus.max_vcpus)
        apic_id = topology.apic_id(index)
        vcpu = self.vm.create_vcpu(index, apic_id)
        self.vcpus[index] = vcpu
        vcpu.set_cpuid(cpuid.limited(cpuid.for_vcpu(self._supported_cpuid, apic_id, cpus.max_vcpus, topology),
                                     max_phys_bits=cpus.max_phys_bits, nested=cpus.nested))
        try:
            vcpu.set_msrs(msrs.BOOT_MSRS)
        except KvmError as e:
            log.info("boot MSRs not all accepted", error=str(e))
        lapic.set_lint(vcpu)
        vcpu.set_fpu(FPU_CONTROL_WORD, MXCSR_DEFAULT)
        return vcpu

    def _pulse(self, irq: int) -> None:
        """An edge on an ISA interrupt line."""
        self.vm.irq_line(irq, 1)
        self.vm.irq_line(irq, 0)

    # --- guest RAM ----------------------------------------------------------------------------

    def _map(self, region) -> None:
        slot = self.slots.allocate()
        try:
            self.vm.map_memory(slot, region.guest_addr, region.mapping)
        except BaseException:
            self.slots.free(slot)
            raise
        region.slot = slot

    def _memory_method(self):
        """The memory-hotplug method of a VM with hotplug_size (None without)."""
        memory = self.config.memory
        if memory.hotplug_size is None:
            return None
        method = self.registry.memory_methods.get(memory.hotplug_method)
        if method is None:          # the config was checked when parsed; a registry without it
            from plugvm.plugins import PluginError, missing
            raise PluginError(f"--memory hotplug_method={memory.hotplug_method}: "
                              f"{missing('hotplug_method=' + memory.hotplug_method)}")
        return method

    def _add_ram(self, guest_addr: int, size: int):
        """A memory-hotplug method's new RAM (MemoryHotplugEnv.add_region): mapped with
        the VM's backing, given a KVM slot, then announced to the device plugins, all
        before the guest hears of it. On failure nothing stays mapped."""
        region = self.memory.add_region(guest_addr, size)
        try:
            self._map(region)
        except BaseException:
            self.memory.remove_region(region)
            raise
        devices = [a.transport.device for a in self.devices.devices.values()] if self.devices is not None else []
        self._announced.append(region)
        self.registry.notify("plugvm_memory_added", region=region, devices=devices)
        log.info("guest RAM added", addr=hex(guest_addr), size=size, slot=region.slot)
        return region

    def memory_actual_size(self) -> int:
        if self.memory_hotplug is not None:
            return self.memory_hotplug.actual_size()
        return self.memory.size

    # --- PCI hotplug (the API's threads, and the vCPU that ejects) ------------------------------

    def add_device(self, device_type, config):
        """Hot-add: build the device as at boot but with 64-bit BARs, put it in a free
        slot (or its pci_device_id), then tell the guest (PCIU, the GED's PCI bit).
        Returns its PciDeviceInfo; on failure nothing is attached and the guest is not told."""
        info = self.devices.add(device_type, config, bar_64bit=True)
        attached = self.devices.devices[info.id]
        self.pci_hotplug.added(attached.segment, attached.slot)
        self.ged.notify(PCI_DEVICES_CHANGED)
        return info

    def request_removal(self, device_id: str):
        """Ask the guest to let go of a device (PCID, the GED's PCI bit); it is released
        when the guest ejects it. Returns the device's device_manager.Attached."""
        attached = self.devices.request_removal(device_id)
        self.pci_hotplug.removing(attached.segment, attached.slot)
        self.ged.notify(PCI_DEVICES_CHANGED)
        log.info("device removal requested", id=device_id, slot=attached.slot)     # after: the guest is told first
        return attached

    # --- CPU hotplug --------------------------------------------------------------------------

    def check_resize_vcpus(self, desired: int) -> None:
        """Raise what resize_vcpus(desired) would raise before it changed anything."""
        pending = self.cpu_hotplug.removing()
        if pending:
            raise CpuRemovalPending(f"the removal of CPU {', '.join(map(str, pending))} is still pending: the "
                                    f"guest has not ejected it yet")
        if not 1 <= desired <= self.config.cpus.max_vcpus:
            raise ValueError(f"desired_vcpus={desired}")

    def resize_vcpus(self, desired: int) -> list[threading.Event]:
        """Make CPUs 0..desired-1 present. Up: create the vCPUs never created before (KVM
        cannot destroy one; a removed CPU's vCPU is reused), start their threads and mark
        them inserting. Down: mark the highest for removal; they stop when the guest
        ejects them. Then the GED's CPU bit. Returns one event per CPU changed, set once
        the guest has seen the new CPU (its _STA) or ejected the removed one. Raises
        CpuRemovalPending while an earlier removal is not ejected, changing nothing."""
        self.check_resize_vcpus(desired)
        events = []
        if desired > self.present:
            for index in range(self.present, desired):
                vcpu = self.vcpus.get(index) or self._create_vcpu(index)
                thread = self._thread(index, vcpu)
                self.threads[index] = thread
                events.append(self.cpu_hotplug.insert(index))
                thread.start()
                if self.paused:
                    thread.pause()
        else:
            events = [self.cpu_hotplug.remove(index) for index in range(desired, self.present)]
        if events:
            log.info("resizing vcpus", present=self.present, desired=desired)
            self.present = desired
            self.ged.notify(CPU_DEVICES_CHANGED)
        return events

    def _thread(self, index: int, vcpu) -> VcpuThread:
        pinned = {a.vcpu: a.host_cpus for a in self.config.cpus.affinity or ()}
        return VcpuThread(vcpu, *self._buses(), self.outcome, pinned.get(index))

    def _buses(self):
        """The buses vCPU threads dispatch to: counting ones with PLUGVM_EXIT_STATS=1."""
        if not exit_stats.enabled():
            return self.pio, self.mmio
        if self._counting is None:
            self._counting = (exit_stats.CountingBus(self.pio), exit_stats.CountingBus(self.mmio))
        return self._counting

    def _eject_vcpu(self, index: int) -> None:
        """The guest ejected CPU `index` (on the vCPU thread that ran _EJ0): its thread
        leaves KVM_RUN and ends; the vCPU stays, for a later resize up."""
        thread = self.threads.pop(index, None)
        if thread is None:
            return
        thread.kick()
        if thread is not threading.current_thread():
            thread.join(1.0)            # as cloud-hypervisor: a second at most, then go on
            if thread.is_alive():
                log.warning("an ejected vCPU's thread did not stop within 1 s", vcpu=index)
        log.info("vcpu ejected", vcpu=index)

    def _eject(self, segment: int, slot: int) -> None:
        self.devices.eject(segment, slot)

    def power_button(self) -> None:
        """Press the ACPI power button: the guest's OS decides what to do (it powers off)."""
        self.ged.notify(POWER_BUTTON_CHANGED)

    def request_poweroff(self) -> None:
        self.outcome.set("poweroff")

    def request_reset(self) -> None:
        self.outcome.set("reset")

    def start(self) -> None:
        self.threads = {i: self._thread(i, v) for i, v in self.vcpus.items()}
        for t in list(self.threads.values()):
            t.start()

    def stop(self) -> None:
        """Stop every vCPU thread and wait for them."""
        for t in list(self.threads.values()):
            t.kick()
        for t in list(self.threads.values()):
            while t.is_alive():
                t.join(0.1)
                t.kick()
        log.debug("vcpus stopped", outcome=self.outcome.kind)

    def pause(self, timeout: float = 10.0) -> None:
        """Park every vCPU outside KVM_RUN and stop the guest's clock (kvmclock), so that
        the guest does not see the pause as time passing."""
        self.paused = True
        for t in list(self.threads.values()):
            t.pause()
        deadline = time.monotonic() + timeout
        for t in list(self.threads.values()):
            while not t.parked.wait(0.05):
                if time.monotonic() > deadline or not t.is_alive():
                    break
        try:
            self._paused_clock = self.vm.get_clock()
        except KvmError as e:
            log.info("the guest clock cannot be saved", error=str(e))
            self._paused_clock = None

    def resume(self) -> None:
        if self._paused_clock is not None:
            try:
                self.vm.set_clock(self._paused_clock)
            except KvmError as e:
                log.info("the guest clock cannot be restored", error=str(e))
            self._paused_clock = None
        self.paused = False
        for t in list(self.threads.values()):
            t.resume()

    def run(self) -> Outcome:
        """Run until the guest powers off, resets or fails (used where no API drives the VM)."""
        self.start()
        every = float(os.environ.get("PLUGVM_SAMPLE_VCPUS", "0") or 0)
        try:
            while not self.outcome.wait(every or 0.5):
                if every:
                    for t in list(self.threads.values()):
                        t.sample()
        finally:
            self.stop()
        return self.outcome

    def close(self, handover: dict | None = None) -> None:
        """Release everything. For a guest reboot, `handover` collects what devices hand
        to the next boot (DeviceManager.close)."""
        if self._counting is not None:
            for name, bus in zip(("pio", "mmio"), self._counting):
                bus.report(name)
            self._counting = None
        if self.com1 is not None:
            self.com1.close()                 # what the guest printed last, before anything else goes
            self.com1 = None
        if self.devices is not None:
            self.devices.close(handover)      # before the memory its I/O threads use goes away
            self.devices = None
        if self.device_memory is not None:
            self.device_memory.close()        # what no device was attached to any more
            self.device_memory = None
        for vcpu in self.vcpus.values():
            vcpu.close()
        self.vcpus = {}
        if self.memory_hotplug is not None:
            self.memory_hotplug.close()
            self.memory_hotplug = None
        for region in self._announced:
            self.registry.notify("plugvm_memory_removed", region=region)
        self._announced = []
        if self.memory is not None:
            self.memory.close()
            self.memory = None
        self.vm.close()
