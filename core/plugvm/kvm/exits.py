"""KVM_RUN's exits, decoded into typed values the VMM dispatches on.

Plain classes with __slots__ rather than dataclasses: one is made at every exit
(a frozen dataclass's __init__ goes through object.__setattr__ per field, three
times the cost, which the lab's TCG multiplies into tens of microseconds per exit),
and defining nine dataclasses took 5 ms of every start.
"""

from __future__ import annotations


class _Exit:
    __slots__ = ()

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"


class IoExit(_Exit):
    """A port access: `data` is the run page's own buffer (count*size bytes), so an
    IN is answered by writing into it before the next KVM_RUN."""

    __slots__ = ("port", "size", "count", "is_write", "data")

    def __init__(self, port: int, size: int, count: int, is_write: bool, data: memoryview):
        self.port, self.size, self.count, self.is_write, self.data = port, size, count, is_write, data


class MmioExit(_Exit):
    """A memory access to an address no memory slot backs; `data` as for IoExit."""

    __slots__ = ("addr", "is_write", "data")

    def __init__(self, addr: int, is_write: bool, data: memoryview):
        self.addr, self.is_write, self.data = addr, is_write, data


class Interrupted(_Exit):
    """KVM_RUN returned early: a signal, or immediate_exit was set."""

    __slots__ = ()


class Halt(_Exit):
    """The vCPU halted (only seen without an in-kernel LAPIC)."""

    __slots__ = ()


class Shutdown(_Exit):
    """A triple fault: on a PC the machine resets."""

    __slots__ = ()


class SystemEvent(_Exit):
    """KVM_SYSTEM_EVENT_SHUTDOWN, _RESET or _CRASH."""

    __slots__ = ("kind",)

    def __init__(self, kind: str):
        self.kind = kind


class InternalError(_Exit):
    """KVM could not handle the exit; for emulation failures, the instruction bytes."""

    __slots__ = ("suberror", "insn_bytes", "data")

    def __init__(self, suberror: int, insn_bytes: bytes, data: tuple[int, ...]):
        self.suberror, self.insn_bytes, self.data = suberror, insn_bytes, data


class FailEntry(_Exit):
    __slots__ = ("hardware_reason",)

    def __init__(self, hardware_reason: int):
        self.hardware_reason = hardware_reason


class Unhandled(_Exit):
    __slots__ = ("reason",)

    def __init__(self, reason: int):
        self.reason = reason


Exit = IoExit | MmioExit | Interrupted | Halt | Shutdown | SystemEvent | InternalError | FailEntry | Unhandled
