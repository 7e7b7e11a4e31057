"""Where a guest's exits to plugvm go (PLUGVM_EXIT_STATS=1): each vCPU's port and MMIO
accesses counted by device, with the time Python spends on them, logged when the
machine closes. A measuring aid for start-up and boot work; off, it costs nothing,
because the vCPU threads then get the plain buses.

The counting bus stands in front of a Bus: the vCPU loop calls read() and write()
as it would on the bus itself."""

from __future__ import annotations

import os
import threading
import time
from collections import defaultdict

from plugvm.logs import get_logger

log = get_logger(__name__)
ENV = "PLUGVM_EXIT_STATS"


def enabled() -> bool:
    return os.environ.get(ENV) == "1"


class CountingBus:
    """A Bus's read/write, counted per device range (named by the device's class and the
    range's start) and timed with perf_counter_ns."""

    def __init__(self, bus):
        self.bus = bus
        self._lock = threading.Lock()
        self.counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0, 0])    # (what, rw) → [n, ns]

    def _key(self, addr: int, size: int) -> str:
        found = self.bus.find(addr, size)
        if found is None:
            return f"nothing at {addr:#x}"
        device, offset = found
        return f"{type(device).__name__}@{addr - offset:#x}"

    def _count(self, addr: int, size: int, rw: str, started: int) -> None:
        spent = time.perf_counter_ns() - started
        key = (self._key(addr, size), rw)
        with self._lock:
            entry = self.counts[key]
            entry[0] += 1
            entry[1] += spent

    def read(self, addr: int, data) -> bool:
        started = time.perf_counter_ns()
        handled = self.bus.read(addr, data)
        self._count(addr, len(data), "r", started)
        return handled

    def write(self, addr: int, data) -> bool:
        started = time.perf_counter_ns()
        handled = self.bus.write(addr, data)
        self._count(addr, len(data), "w", started)
        return handled

    def report(self, name: str, top: int = 15) -> None:
        with self._lock:
            rows = sorted(self.counts.items(), key=lambda item: -item[1][1])
        total_n = sum(n for _, (n, _) in rows)
        total_ms = sum(ns for _, (_, ns) in rows) / 1e6
        log.info("exit stats", bus=name, exits=total_n, python_ms=round(total_ms, 1))
        for (what, rw), (n, ns) in rows[:top]:
            log.info("exit stats", bus=name, device=what, access=rw, exits=n, python_ms=round(ns / 1e6, 1),
                     us_per_exit=round(ns / n / 1e3, 1))
