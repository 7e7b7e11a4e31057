"""The VMM: the VM's configuration and lifecycle, driven by the command line and the
REST API alike.

As in cloud-hypervisor, the VMM holds an optional VM config and, once booted, one
Machine (a boot of that config). A guest reset, or vm.reboot, rebuilds the Machine
from the *current* config; a guest power-off ends the VMM with status 0; a failure
ends it with VmmError. API requests are served one at a time (the lock), on the
API server's threads; the main thread only reacts to what the guest does.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from enum import StrEnum

from plugvm import __version__, plugins
from plugvm.cpu import core_scheduling
from plugvm.config.errors import ConfigError
from plugvm.device_manager import RemovalNotAllowedError, RemovalPendingError, UnknownDeviceError, check_slots
from plugvm.errors import PlugvmError
from plugvm.kvm import Kvm
from plugvm.logs import get_logger
from plugvm.machine import CpuRemovalPending, Machine
from plugvm.memory_hotplug import ResizeRefused
from plugvm.serial_port import Consoles
from plugvm.vcpu_thread import KICK_SIGNAL

log = get_logger(__name__)


class VmmError(PlugvmError, RuntimeError):
    """The guest could not run on (or stopped with an error)."""


class VmState(StrEnum):
    CREATED = "Created"
    RUNNING = "Running"
    SHUTDOWN = "Shutdown"
    PAUSED = "Paused"


class LifecycleError(PlugvmError, RuntimeError):
    """An API action that the VM's state does not allow; `kind` names cloud-hypervisor's
    error (the API maps it to ch's status code) and `chain` its error strings."""

    def __init__(self, kind: str, *chain: str):
        super().__init__(chain[-1] if chain else kind)
        self.kind = kind
        self.chain = list(chain)


def _pinned(device_config, device_id: str, slot: int) -> dict:
    """The fields that record where a hot-added device went: its id, and its slot when
    the config has a pci_device_id (plugvm.device_config.PciFields)."""
    names = {f.name for f in fields(device_config)}
    return {"id": device_id, **({"pci_device_id": slot} if "pci_device_id" in names else {})}


@dataclass(frozen=True)
class HotplugOutcome:
    """What a device verb answers: `body` (the added device's {"id", "bdf"}, or None),
    and with a wait, whether the guest finished its part in time (done)."""

    body: dict | None
    done: bool | None = None


def held_fds(config) -> set[int]:
    """The fds the device configs of `config` hold (a config's `fds`: file descriptors the
    VMM owns, such as the tap fds a client sent with vm.add-net)."""
    held: set[int] = set()
    if config is not None:
        for value in config.devices.values():
            for device_config in value if isinstance(value, tuple) else (value,):
                held.update(getattr(device_config, "fds", None) or ())
    return held


def _ignore_kicks() -> None:
    """The kick signal only needs to interrupt KVM_RUN: its handler does nothing (the
    default would end the process). Only the main thread may set it."""
    signal.signal(KICK_SIGNAL, lambda signum, frame: None)


class Vmm:
    def __init__(self, config=None, registry=None):
        self._config = None
        self.config = config
        self._given_up_front = config is not None     # run() boots it (the command line's VM)
        if threading.current_thread() is threading.main_thread():
            _ignore_kicks()         # before any API thread can boot a VM whose vCPUs get kicked
        self.registry = registry if registry is not None else plugins.load()
        self.machine: Machine | None = None
        self.state: VmState | None = VmState.CREATED if config is not None else None
        self.boots = 0
        self.lock = threading.RLock()         # one API request (or guest event) at a time
        self._wake = threading.Event()
        self._exit: int | None = None
        self._exit_why: str | None = None
        self._failure: str | None = None
        self.kvm: Kvm | None = None
        self._supported = None
        self._consoles = Consoles()         # the serial port's and console's host ends, across boots
        self._core_scheduled: bool | None = None     # whether the threads share a cookie (None: not tried)

    @property
    def config(self):
        return self._config

    @config.setter
    def config(self, config) -> None:
        # A device config's fds are the VMM's while some config holds them: the one that
        # drops the last holder (a removal, vm.delete) closes them. A device dups what it uses.
        dropped = held_fds(self._config) - held_fds(config)
        self._config = config
        for fd in sorted(dropped):
            try:
                os.close(fd)
            except OSError:
                log.warning("a device config's fd was already closed", fd=fd)

    # --- the main thread -----------------------------------------------------------------

    def run(self, boot: bool = True, running: Callable[[], None] | None = None) -> int:
        """Run until the guest powers off (0), vmm.shutdown (0) or a failure (VmmError).
        Must be called in the main thread. With boot, a config given up front is booted;
        then running() is called (the command line starts the API there, off the path
        to the guest's first instruction)."""
        _ignore_kicks()
        try:
            with self.lock:
                # The API may have created (and booted) a VM already: only the config
                # given up front, still unbooted, is this call's to boot.
                self._open_kvm()
                if boot and self._given_up_front and self.machine is None and self.state is VmState.CREATED:
                    self._boot()
            if running is not None:
                running()
            while True:
                self._wake.wait(0.5)
                self._wake.clear()
                with self.lock:
                    machine = self.machine
                    if machine is not None and machine.outcome.kind is not None:
                        self._guest_event(machine.outcome)
                    if self._exit is not None:
                        if self._exit_why:
                            log.info("exit requested", why=self._exit_why, status=self._exit)
                        break
            if self._failure:
                raise VmmError(self._failure)
            return self._exit
        finally:
            with self.lock:
                self._teardown("exit")
                self._consoles.close()
                if self.kvm is not None:
                    self.kvm.close()
                    self.kvm = None

    def _open_kvm(self) -> None:
        """/dev/kvm and what it supports, once: by run(), or by the first boot an API
        thread asks for before run() got here."""
        if self.kvm is None:
            self.kvm = Kvm()
            self._supported = self.kvm.supported_cpuid()

    def _guest_event(self, outcome) -> None:
        kind = outcome.kind
        if kind == "reset":
            log.info("guest reset; rebuilding the VM", reason=outcome.message or "reset")
            self._reboot("reset")
        elif kind == "poweroff":
            log.info("guest powered off")
            self._teardown("poweroff")
            self.state = VmState.SHUTDOWN
            self._exit = 0
        else:
            self._teardown("failed")
            self._failure = outcome.message or "the VM stopped"
            self._exit = 1

    def _reboot(self, reason: str) -> None:
        """A guest reset ("reset") or vm.reboot ("api"): the next boot's devices get what
        this boot's hand over (a vhost-user connection, ...); what no device claims is closed."""
        self.registry.notify("plugvm_vm_rebooting", vm_config=self.config, reason=reason)
        handover: dict = {}
        self._teardown(None, handover)
        try:
            self._boot(handover)
            self.registry.notify("plugvm_vm_rebooted", vm_config=self.config, boot=self.boots)
        finally:
            for device_id, kept in handover.items():
                log.info("closing what a device handed over to a boot without it", id=device_id)
                try:
                    kept.close()
                except Exception:
                    log.exception("closing a handover failed", id=device_id)

    def _boot(self, handover: dict | None = None) -> None:
        """Build a Machine from the current config and start it (the lock is held)."""
        self._consoles.configure(self.config)
        if self._core_scheduled is None:
            # core_scheduling=vm, the one value plugvm takes: before the vCPU threads
            # start, which then inherit the cookie. Once: a new cookie per boot would
            # split the threads that stay (the I/O threads of the API, the consoles).
            self._core_scheduled = core_scheduling.share_one_cookie()
        self._open_kvm()
        config = self.config
        self.registry.notify("plugvm_vm_booting", vm_config=config, boot=self.boots + 1)
        try:
            machine = Machine(self.kvm, config, self._consoles, self._supported, self.registry,
                              on_outcome=self._wake.set, handover=handover)
        except BaseException:
            self.registry.notify("plugvm_vm_shutdown", vm_config=config, reason="failed")
            raise
        self.boots += 1
        log.info("booting", boot=self.boots, vcpus=config.cpus.boot_vcpus)
        self.machine = machine
        machine.start()
        self.state = VmState.RUNNING
        self.registry.notify("plugvm_vm_booted", vm_config=config, boot=self.boots)

    def _teardown(self, reason: str | None, handover: dict | None = None) -> None:
        """Stop and close the running boot, if any. `reason` is plugvm_vm_shutdown()'s
        (None for a reboot's teardown: the VM goes on)."""
        machine, self.machine = self.machine, None
        if machine is not None:
            machine.stop()
            machine.close(handover)
            if reason is not None:
                self.registry.notify("plugvm_vm_shutdown", vm_config=self.config, reason=reason)

    # --- the API's actions (called on API threads) -------------------------------------------

    def ping(self) -> dict:
        return {"build_version": __version__, "version": __version__, "pid": os.getpid(), "features": []}

    def shutdown_vmm(self) -> None:
        with self.lock:
            self._teardown("api")
            self.config, self.state = None, None
        # The process ends once the reply has gone out: waitress writes it after we return.
        threading.Timer(0.3, self._request_exit, [0]).start()

    def _request_exit(self, status: int) -> None:
        with self.lock:
            self._exit = status
        self._wake.set()

    def request_exit(self, status: int, why: str) -> None:
        """End run() with status, tearing the VM down on the way. Safe in a signal
        handler: it takes no lock (an API thread may hold it), only sets what run()
        reads on its next wake-up."""
        self._exit_why = why            # logged by run(): logging here could meet its own lock
        self._exit = status
        self._wake.set()

    def create(self, config) -> None:
        with self.lock:
            if self.config is not None:
                raise LifecycleError("VmAlreadyCreated", "Error from API", "The VM could not be created",
                                     "The VM is already created")
            try:
                check_slots(self.registry, config)
            except ConfigError as e:
                raise LifecycleError("InvalidConfig", "Error from API", "The VM could not be created", str(e)) from e
            self.config, self.state = config, VmState.CREATED

    def boot(self) -> None:
        with self.lock:
            self._need_config()
            if self.machine is not None:
                raise LifecycleError("VmAlreadyCreated", "Error from API", "The VM could not boot",
                                     "The VM is already created")
            try:
                self._boot()
            except LifecycleError:
                raise
            except PlugvmError as e:
                # A device or file of the config that cannot be used: cloud-hypervisor's
                # VmBoot error (500) with the cause, and the VM stays as it was (created).
                raise LifecycleError("VmBoot", "Error from API", "The VM could not boot", str(e)) from e

    def delete(self) -> None:
        with self.lock:
            self._teardown("api")
            self.config, self.state = None, None

    def shutdown(self) -> None:
        with self.lock:
            self._need_running("The VM could not shut down")
            self._teardown("api")
            self.state = VmState.SHUTDOWN

    def reboot(self) -> None:
        with self.lock:
            self._need_running("The VM could not reboot")
            self._reboot("api")

    def pause(self) -> None:
        with self.lock:
            self._need_running("The VM could not pause")
            if self.state is not VmState.RUNNING:
                raise LifecycleError("InvalidStateTransition", "Error from API", "The VM could not pause",
                                     f"Invalid transition from {self.state} to Paused")
            self.machine.pause()
            self.state = VmState.PAUSED

    def resume(self) -> None:
        with self.lock:
            self._need_running("The VM could not resume")
            if self.state is not VmState.PAUSED:
                raise LifecycleError("InvalidStateTransition", "Error from API", "The VM could not resume",
                                     f"Invalid transition from {self.state} to Running")
            self.machine.resume()
            self.state = VmState.RUNNING

    def power_button(self) -> None:
        with self.lock:
            self._need_running("The VM could not be powered off with the power button")
            self.machine.power_button()

    def resize(self, desired_vcpus: int | None, desired_ram: int | None, desired_balloon: int | None,
               wait: float | None = None) -> HotplugOutcome:
        """vm.resize. A created VM: its config changes. A booted one: CPUs are hot-added or
        removed (the guest ejects them), and the config's boot_vcpus follows, so a reboot
        boots that many, all online; desired_ram goes to the VM's memory-hotplug method,
        whose answer becomes the config's memory. One part refused changes neither. With
        `wait`, returns once the guest has seen every new CPU or ejected every removed
        one, and taken the memory change, or the time ran out."""
        with self.lock:
            self._need_config()
            cfg = self.config
            if desired_vcpus is not None and not 1 <= desired_vcpus <= cfg.cpus.max_vcpus:
                raise LifecycleError("InvalidConfig", "Error from API", "The VM could not be resized",
                                     f"desired_vcpus={desired_vcpus} is not between 1 and max_vcpus "
                                     f"({cfg.cpus.max_vcpus})")
            if desired_ram is not None and (desired_ram <= 0 or desired_ram % 4096):
                raise LifecycleError("InvalidConfig", "Error from API", "The VM could not be resized",
                                     f"desired_ram={desired_ram} is not a positive multiple of 4096")
            if desired_balloon is not None:
                raise LifecycleError("NoBalloon", "Error from API", "The VM could not be resized",
                                     "plugvm has no balloon device")
            events: list[threading.Event] = []
            memory = None if desired_ram is None else replace(cfg.memory, size=desired_ram)
            if self.machine is not None:
                events, memory = self._resize_running(desired_vcpus, desired_ram)
            if desired_vcpus is not None:
                cfg = replace(cfg, cpus=replace(cfg.cpus, boot_vcpus=desired_vcpus))
            if memory is not None:
                cfg = replace(cfg, memory=memory)
            self.config = cfg
            if self.machine is not None:
                self.registry.notify("plugvm_vm_resized", vm_config=cfg, desired_vcpus=desired_vcpus,
                                     desired_ram=desired_ram)
        if wait is None:
            return HotplugOutcome(None)
        deadline = time.monotonic() + wait
        return HotplugOutcome(None, all(e.wait(max(0.0, deadline - time.monotonic())) for e in events))

    def _resize_running(self, desired_vcpus: int | None, desired_ram: int | None):
        """A running VM's resize: both parts are checked before either is applied, then
        CPUs first, as cloud-hypervisor does. Returns the events to wait for and the
        MemoryConfig the VM config takes (None: unchanged)."""
        machine, cfg = self.machine, self.config
        hotplug = machine.memory_hotplug
        ram = desired_ram is not None and not (hotplug is None and desired_ram == cfg.memory.size)
        if ram and hotplug is None:
            raise LifecycleError("InvalidConfig", "Error from API", "The VM could not be resized",
                                 f"desired_ram: the VM was booted without --memory hotplug_size, so its RAM "
                                 f"({cfg.memory.size} bytes) cannot change while it runs")
        if desired_vcpus is not None:
            try:
                machine.check_resize_vcpus(desired_vcpus)
            except CpuRemovalPending as e:
                raise LifecycleError("VcpuPendingRemovedVcpu", "Error from API",
                                     "The VM could not be resized", str(e)) from e
        try:
            if ram:
                hotplug.check_resize(desired_ram)
            self.registry.notify("plugvm_vm_resizing", desired_vcpus=desired_vcpus, desired_ram=desired_ram)
            events = machine.resize_vcpus(desired_vcpus) if desired_vcpus is not None else []
            if not ram:
                return events, None
            resized = hotplug.resize(desired_ram)
        except ResizeRefused as e:
            raise LifecycleError("ResizeRefused", "Error from API", "The VM could not be resized", str(e)) from e
        except PlugvmError as e:
            raise LifecycleError("VmResize", "Error from API", "The VM could not be resized", str(e)) from e
        log.info("memory resized", desired=desired_ram, actual=hotplug.actual_size())
        return events + [resized.done], resized.config

    def add_device(self, device_type, device_config, wait: float | None = None) -> HotplugOutcome:
        """A device verb (vm.add-disk, ...). A created VM: the device is added to its config
        (cold add; ch answers 204). A booted VM: hot-added (ch answers 200 with its id and
        BDF) and added to the config with that id and slot, so that a reboot brings it
        back at the same BDF. With `wait` (seconds), returns once the guest's driver has
        enabled the device or the time ran out (outcome.done says which)."""
        with self.lock:
            self._need_config()
            self._check_unique(device_type, device_config)
            if self.machine is None:
                try:
                    config = self._with_device(self.config, device_type, device_config)
                    check_slots(self.registry, config)
                    self.config = config
                except ConfigError as e:
                    raise LifecycleError("InvalidConfig", "Error from API", "The device could not be added",
                                         str(e)) from e
                return HotplugOutcome(None)
            if not device_type.api_verb:
                raise LifecycleError("HotplugNotAllowed", "Error from API", "The device could not be added",
                                     f"{device_type.name} devices cannot be hot-added")
            machine = self.machine
            try:
                info = machine.add_device(device_type, device_config)
            except PlugvmError as e:
                raise LifecycleError("DeviceAdd", "Error from API", "The device could not be added", str(e)) from e
            attached = machine.devices.devices[info.id]
            pinned = replace(device_config, **_pinned(device_config, info.id, attached.slot))
            self.config = self._with_device(self.config, device_type, pinned)
            ready = attached.transport.driver_ok
        return HotplugOutcome(info.to_json(), self._wait(ready, wait))

    def remove_device(self, device_id: str, wait: float | None = None) -> HotplugOutcome:
        """vm.remove-device: a booted VM's device is asked of the guest and dropped from
        the config at once (a reboot does not bring it back); it is released when the
        guest ejects it. A created VM's device leaves the config. With `wait`, returns
        once the guest has ejected it or the time ran out."""
        with self.lock:
            self._need_config()
            found = self._find_device(device_id)
            if self.machine is None:
                if found is None:
                    raise LifecycleError("NoDeviceToRemove", "Error from API", "The device could not be removed",
                                         f"No device with id {device_id!r}")
                self.config = self._without_device(self.config, *found)
                return HotplugOutcome(None)
            try:
                attached = self.machine.request_removal(device_id)
            except UnknownDeviceError as e:
                raise LifecycleError("NoDeviceToRemove", "Error from API", "The device could not be removed",
                                     str(e)) from e
            except RemovalPendingError as e:
                raise LifecycleError("RemovalPending", "Error from API", "The device could not be removed",
                                     str(e)) from e
            except RemovalNotAllowedError as e:
                raise LifecycleError("RemovalNotAllowed", "Error from API", "The device could not be removed",
                                     str(e)) from e
            if found is not None:
                self.config = self._without_device(self.config, *found)
            gone = attached.gone
        return HotplugOutcome(None, self._wait(gone, wait))

    @staticmethod
    def _wait(event: threading.Event, wait: float | None) -> bool | None:
        # Outside the lock: the guest's part takes seconds, and the API serves others meanwhile.
        return None if wait is None else event.wait(wait)

    def _device_ids(self) -> set[str]:
        ids = {getattr(c, "id", None) for value in self.config.devices.values()
               for c in (value if isinstance(value, tuple) else (value,))}
        ids.add(getattr(self.config.console, "id", None))
        if self.machine is not None:
            ids |= set(self.machine.devices.devices)     # a removal still pending keeps its id
        return ids - {None}

    def _check_unique(self, device_type, device_config) -> None:
        device_id = getattr(device_config, "id", None)
        if device_id is not None and device_id in self._device_ids():
            raise LifecycleError("IdentifierNotUnique", "Error from API", "The device could not be added",
                                 f"Identifier {device_id} is not unique")
        slot = getattr(device_config, "pci_device_id", None)
        if slot is not None:
            taken = {getattr(c, "pci_device_id", None) for value in self.config.devices.values()
                     for c in (value if isinstance(value, tuple) else (value,))}
            if slot in taken:
                raise LifecycleError("InvalidConfig", "Error from API", "The device could not be added",
                                     f"pci_device_id {slot} is already taken by another device")
        if not device_type.multiple and self.config.devices.get(device_type.config_key) is not None:
            raise LifecycleError("InvalidConfig", "Error from API", "The device could not be added",
                                 f"the VM already has its one {device_type.name} device")

    def _find_device(self, device_id: str):
        """(config key, config) of the device with that id in the config, or None."""
        for key, value in self.config.devices.items():
            for c in (value if isinstance(value, tuple) else (value,)):
                if getattr(c, "id", None) == device_id:
                    return key, c
        return None

    @staticmethod
    def _with_device(config, device_type, device_config):
        devices = dict(config.devices)
        if device_type.multiple:
            devices[device_type.config_key] = (devices.get(device_type.config_key) or ()) + (device_config,)
        else:
            devices[device_type.config_key] = device_config
        return replace(config, devices=devices)

    @staticmethod
    def _without_device(config, key, device_config):
        devices = dict(config.devices)
        value = devices[key]
        if isinstance(value, tuple):
            devices[key] = tuple(c for c in value if c is not device_config)
        else:
            del devices[key]
        return replace(config, devices=devices)

    def info(self) -> dict:
        with self.lock:
            self._need_config()
            cfg = self.config
            machine = self.machine
            tree = machine.devices.device_tree() if machine is not None else {}
            actual = machine.memory_actual_size() if machine is not None else cfg.memory.size
            return {"config": cfg.to_json(), "state": str(self.state or VmState.CREATED),
                    "memory_actual_size": actual, "device_tree": tree}

    def counters(self) -> dict:
        with self.lock:
            self._need_running("The counters could not be read")
            return self.machine.devices.counters()

    def _need_config(self) -> None:
        if self.config is None:
            raise LifecycleError("VmNotCreated", "Error from API", "The VM is not created")

    def _need_running(self, what: str) -> None:
        self._need_config()
        if self.machine is None:
            raise LifecycleError("VmNotRunning", "Error from API", what, "The VM is not booted")
