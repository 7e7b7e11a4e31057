"""--event-monitor path=PATH|fd=N: where the VMM reports its events (cloud-hypervisor's
option, cloud-hypervisor/src/main.rs; the events are plugvm.builtin.event_monitor's)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from plugvm.config.errors import ConfigError, Where
from plugvm.config.options import Options

WHERE = Where("--event-monitor")
MAX_FD = 2**31 - 1


@dataclass(frozen=True)
class EventMonitorConfig:
    path: Path | None = None
    fd: int | None = None

    def open(self) -> int:
        """The fd events go to: the path created (truncated), or the inherited fd, which
        must be open for writing. ConfigError naming the option otherwise."""
        if self.fd is not None:
            try:
                mode = _access_mode(self.fd)
            except OSError as e:
                raise WHERE.bad("fd", self.fd, f"is not an open file descriptor ({e.strerror})") from e
            if mode == os.O_RDONLY:
                raise WHERE.bad("fd", self.fd, "is open for reading only")
            return self.fd
        try:
            return os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        except OSError as e:
            raise WHERE.bad("path", str(self.path), f"cannot be opened for writing ({e.strerror})") from e


def _access_mode(fd: int) -> int:
    import fcntl
    return fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE


def parse_event_monitor(text: str) -> EventMonitorConfig:
    options = Options(text, WHERE, ("path", "fd"))
    if options.given("path") and options.given("fd"):
        raise WHERE.error("give either path= or fd=, not both")
    if options.given("fd"):
        if not options.text("fd"):
            raise WHERE.error("fd= needs a value")
        return EventMonitorConfig(fd=options.integer("fd", 0, MAX_FD))
    if options.given("path"):
        if not options.text("path"):
            raise WHERE.error("path= needs a value")
        return EventMonitorConfig(path=Path(options.text("path")))
    raise ConfigError("--event-monitor: expected path=PATH or fd=N")
