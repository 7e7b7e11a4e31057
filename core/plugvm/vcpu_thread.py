"""The loop each vCPU thread runs: KVM_RUN, then dispatch the exit to a bus.

The GIL is released inside KVM_RUN (cffi releases it around C calls), so vCPUs
run in parallel; only exits to userspace take it.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path

from plugvm.kvm import exits
from plugvm.logs import get_logger
from plugvm.thread_names import name_this_thread

log = get_logger(__name__)
KICK_SIGNAL = signal.SIGUSR1   # interrupts a vCPU's KVM_RUN; its handler does nothing


def describe_internal_error(exit: exits.InternalError, rip: int | None) -> str:
    where = f" at RIP {rip:#x}" if rip is not None else ""
    what = f"instruction bytes {exit.insn_bytes.hex(' ')}" if exit.insn_bytes else "no instruction bytes reported"
    host = (" This host's KVM is PVM, whose instruction emulator runs only the instructions it implements; "
            "ordinary guests need hardware VMX/SVM." if Path("/sys/module/kvm_pvm").exists() else "")
    return (f"KVM could not run the guest's instruction{where} ({what}; internal error suberror "
            f"{exit.suberror}): the host's KVM cannot run this guest.{host}")


class VcpuThread(threading.Thread):
    """Runs one vCPU until the machine stops it or the guest powers off, resets or fails."""

    def __init__(self, vcpu, pio, mmio, outcome, host_cpus: tuple[int, ...] | None = None):
        super().__init__(name=f"vcpu{vcpu.index}", daemon=True)
        self.host_cpus = host_cpus        # --cpus affinity: the host CPUs this thread may run on
        self.vcpu = vcpu
        self.pio = pio
        self.mmio = mmio
        self.outcome = outcome        # machine.Outcome: the first event wins
        self.stopping = False
        self.sample_requested = False
        self._running = threading.Event()     # cleared while the VM is paused
        self._running.set()
        self.parked = threading.Event()       # set while the thread waits out a pause

    def _interrupt(self) -> None:
        self.vcpu.set_immediate_exit(True)
        if self.ident is not None and self.is_alive():
            try:
                signal.pthread_kill(self.ident, KICK_SIGNAL)
            except ProcessLookupError:
                pass

    def pause(self) -> None:
        """Leave KVM_RUN and wait (parked) until resume(); returns at once — see parked."""
        self._running.clear()
        self._interrupt()

    def resume(self) -> None:
        self._running.set()

    def sample(self) -> None:
        """Make the thread log its registers at its next exit (a debugging aid for a guest
        that hangs without exiting: PLUGVM_SAMPLE_VCPUS=seconds)."""
        self.sample_requested = True
        self._interrupt()

    def kick(self) -> None:
        """Make KVM_RUN return now or, if the thread is outside it, at its next entry."""
        self.stopping = True
        self._running.set()
        self._interrupt()

    def _log_sample(self) -> None:
        regs, sregs = self.vcpu.get_regs(), self.vcpu.get_sregs()
        log.warning("vcpu sample", vcpu=self.vcpu.index, rip=hex(regs.rip), rsp=hex(regs.rsp),
                    rflags=hex(regs.rflags), cr0=hex(sregs.cr0), cr3=hex(sregs.cr3))

    def run(self) -> None:
        name_this_thread(self.name)
        try:
            if self.host_cpus is not None:
                os.sched_setaffinity(0, self.host_cpus)      # 0: this thread, on Linux
            self._loop()
        except Exception as e:  # a bug or a KVM failure: stop the VM, report, never hang
            log.exception("vcpu thread failed", vcpu=self.vcpu.index)
            self.outcome.set("error", f"vCPU {self.vcpu.index} failed: {e}")

    def _loop(self) -> None:
        vcpu, pio, mmio = self.vcpu, self.pio, self.mmio
        while not self.stopping:
            exit = vcpu.run()
            kind = type(exit)
            if kind is exits.IoExit:
                if exit.count == 1:       # all but string I/O (rep ins/outs): data is the one access
                    handled = pio.write(exit.port, exit.data) if exit.is_write else pio.read(exit.port, exit.data)
                else:
                    size = exit.size
                    for i in range(exit.count):
                        chunk = exit.data[i * size:(i + 1) * size]
                        handled = pio.write(exit.port, chunk) if exit.is_write else pio.read(exit.port, chunk)
                if not handled:
                    log.debug("unhandled port access", port=hex(exit.port), write=exit.is_write)
            elif kind is exits.MmioExit:
                handled = mmio.write(exit.addr, exit.data) if exit.is_write else mmio.read(exit.addr, exit.data)
                if not handled:
                    log.debug("unhandled mmio access", addr=hex(exit.addr), write=exit.is_write)
            elif kind is exits.Interrupted:
                if self.stopping:
                    continue
                vcpu.set_immediate_exit(False)
                if self.sample_requested:
                    self.sample_requested = False
                    self._log_sample()
                if not self._running.is_set():
                    self.parked.set()
                    while not self._running.wait(0.5):
                        pass
                    self.parked.clear()
                continue
            elif kind is exits.Shutdown:
                # A triple fault resets a PC.
                log.info("triple fault; resetting", vcpu=vcpu.index)
                self.outcome.set("reset")
            elif kind is exits.SystemEvent:
                self.outcome.set({"shutdown": "poweroff", "reset": "reset"}.get(exit.kind, "error"),
                                 f"guest system event {exit.kind}")
            elif kind is exits.InternalError:
                try:
                    rip = vcpu.get_regs().rip
                except Exception:
                    rip = None
                self.outcome.set("error", describe_internal_error(exit, rip))
            elif kind is exits.Halt:
                self.outcome.set("error", f"vCPU {vcpu.index} halted with no in-kernel LAPIC to wake it")
            else:
                self.outcome.set("error", f"vCPU {vcpu.index}: unexpected KVM exit {exit}")
