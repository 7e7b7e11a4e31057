"""What a process holds that a device could leak: open fds (with what they point at),
threads and file-backed mappings, read from /proc/self and threading.enumerate().

Compared before and after an operation (create() then close(), a hot-add then its
eject), the difference names each leak in words a plugin author can act on."""

from __future__ import annotations

import gc
import os
import threading
import time
from dataclasses import dataclass


def open_fds() -> dict[int, str]:
    held = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            held[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass            # the directory's own fd, closed by now
    return held


def _mappings() -> frozenset[tuple[str, str]]:
    """File-backed mappings as (range, path). Anonymous ones are the allocator's and come
    and go; shared libraries loaded on first use stay mapped for the process's life, so
    neither says anything about a device."""
    found = set()
    with open("/proc/self/maps") as maps:
        for line in maps:
            parts = line.split(maxsplit=5)
            path = parts[5].strip() if len(parts) == 6 else ""
            if not path or path.startswith("[") or ".so" in os.path.basename(path):
                continue
            found.add((parts[0], path))
    return frozenset(found)


@dataclass(frozen=True)
class Resources:
    fds: dict[int, str]
    threads: dict[int, str]                       # ident → name
    mappings: frozenset[tuple[str, str]]

    @classmethod
    def now(cls) -> Resources:
        # An object that holds an fd and is garbage already (an exception's traceback, a
        # cycle) is closed by a collection: only what is still reachable counts.
        gc.collect()
        return cls(open_fds(), {t.ident: t.name for t in threading.enumerate()}, _mappings())

    def leaks(self, after: Resources) -> list[str]:
        """What `after` holds that this snapshot did not, one phrase per item."""
        found = [f"fd {fd} ({path}) open" for fd, path in sorted(after.fds.items())
                 if self.fds.get(fd) != path]
        found += [f"thread {name!r} running" for ident, name in sorted(after.threads.items(), key=lambda i: i[1])
                  if ident not in self.threads]
        found += [f"a mapping of {path} at {span}" for span, path in sorted(after.mappings - self.mappings)]
        return found

    def leaks_settled(self, timeout: float = 2.0) -> list[str]:
        """leaks() against the present, given `timeout` seconds for threads a close()
        told to stop to end (a close should join them; this only forgives the race)."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.leaks(Resources.now())
            if not found or time.monotonic() > deadline:
                return found
            time.sleep(0.05)
