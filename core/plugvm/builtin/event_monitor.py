"""The event monitor (--event-monitor): the VMM's lifecycle as cloud-hypervisor reports
it (its event_monitor crate), one JSON object per event:

    {"timestamp": {"secs": 0, "nanos": 231000000}, "source": "vm", "event": "booted",
     "properties": null}

pretty-printed and followed by a blank line as ch writes them, so that what reads ch's
stream (libvirt's ch driver, scripts) reads ours. The timestamp is the time since the
monitor started; properties are strings (ch's are a string map) or null.

It is an ordinary plugin: it only implements the lifecycle hooks (hookspecs.py), as a
third-party observer would. plugvm.cli registers one when --event-monitor is given.
Writes are non-blocking, as ch's: a reader that stops reading loses events, it never
stalls the VM.
"""

from __future__ import annotations

import errno
import json
import os
import threading
import time

from plugvm.hookspecs import hookimpl
from plugvm.logs import get_logger

log = get_logger(__name__)


class EventMonitor:
    def __init__(self, fd: int, clock=time.monotonic):
        self.fd = fd
        self._clock = clock
        self._start = clock()
        self._lock = threading.Lock()     # hooks come from API, vCPU and main threads
        self._dropped = 0
        os.set_blocking(fd, False)

    def emit(self, source: str, event: str, properties: dict | None = None) -> None:
        elapsed = max(0.0, self._clock() - self._start)
        secs = int(elapsed)
        body = {"timestamp": {"secs": secs, "nanos": int((elapsed - secs) * 1e9)}, "source": source,
                "event": event, "properties": {k: str(v) for k, v in properties.items()} if properties else None}
        data = (json.dumps(body, indent=2) + "\n\n").encode()
        with self._lock:
            if self.fd < 0:
                return
            try:
                while data:
                    data = data[os.write(self.fd, data):]
            except BlockingIOError:
                self._dropped += 1
                if self._dropped == 1:
                    log.warning("event monitor: the reader is not keeping up; events are dropped")
            except OSError as e:
                if e.errno != errno.EPIPE:
                    log.warning("event monitor: cannot write", error=e.strerror)

    def close(self) -> None:
        with self._lock:
            fd, self.fd = self.fd, -1
        if fd >= 0:
            os.close(fd)

    # --- the lifecycle hooks ---------------------------------------------------------------

    @hookimpl
    def plugvm_vm_booting(self, boot):
        self.emit("vm", "booting")

    @hookimpl
    def plugvm_vm_booted(self, boot):
        self.emit("vm", "booted")

    @hookimpl
    def plugvm_vm_rebooting(self, reason):
        self.emit("vm", "rebooting", {"reason": reason})

    @hookimpl
    def plugvm_vm_rebooted(self, boot):
        self.emit("vm", "rebooted")

    @hookimpl
    def plugvm_vm_shutdown(self, reason):
        self.emit("vm", "shutdown", {"reason": reason})

    @hookimpl
    def plugvm_device_added(self, device_id, bdf, hotplug):
        if hotplug:      # ch reports devices the API adds; boot devices are part of "booted"
            self.emit("vm", "device-added", {"id": device_id, "bdf": bdf})

    @hookimpl
    def plugvm_device_removed(self, device_id, bdf):
        self.emit("vm", "device-removed", {"id": device_id, "bdf": bdf})

    @hookimpl
    def plugvm_vm_resizing(self, desired_vcpus, desired_ram):
        self.emit("vm", "resizing", {k: v for k, v in (("desired_vcpus", desired_vcpus),
                                                      ("desired_ram", desired_ram)) if v is not None})

    @hookimpl
    def plugvm_vm_resized(self, desired_vcpus, desired_ram):
        self.emit("vm", "resized", {k: v for k, v in (("desired_vcpus", desired_vcpus),
                                                     ("desired_ram", desired_ram)) if v is not None})


def read_events(text: str) -> list[dict]:
    """The events of a monitor's stream (as written above: objects and blank lines), for
    the tests and for scripts that read what plugvm wrote."""
    found, decoder, at = [], json.JSONDecoder(), 0
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return found
        event, at = decoder.raw_decode(text, at)
        found.append(event)
