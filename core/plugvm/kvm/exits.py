"""KVM_RUN's exits, decoded into typed values the VMM dispatches on."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class IoExit:
    """A port access: `data` is the run page's own buffer (count*size bytes), so an
    IN is answered by writing into it before the next KVM_RUN."""

    port: int
    size: int
    count: int
    is_write: bool
    data: memoryview


@dataclass(frozen=True, slots=True)
class MmioExit:
    """A memory access to an address no memory slot backs; `data` as for IoExit."""

    addr: int
    is_write: bool
    data: memoryview


@dataclass(frozen=True, slots=True)
class Interrupted:
    """KVM_RUN returned early: a signal, or immediate_exit was set."""


@dataclass(frozen=True, slots=True)
class Halt:
    """The vCPU halted (only seen without an in-kernel LAPIC)."""


@dataclass(frozen=True, slots=True)
class Shutdown:
    """A triple fault: on a PC the machine resets."""


@dataclass(frozen=True, slots=True)
class SystemEvent:
    """KVM_SYSTEM_EVENT_SHUTDOWN, _RESET or _CRASH."""

    kind: str


@dataclass(frozen=True, slots=True)
class InternalError:
    """KVM could not handle the exit; for emulation failures, the instruction bytes."""

    suberror: int
    insn_bytes: bytes
    data: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class FailEntry:
    hardware_reason: int


@dataclass(frozen=True, slots=True)
class Unhandled:
    reason: int


Exit = IoExit | MmioExit | Interrupted | Halt | Shutdown | SystemEvent | InternalError | FailEntry | Unhandled
