"""A small QMP client (QEMU's JSON monitor) over a unix socket, for benchmarks that drive
QEMU as the reference: device_add/device_del and the events that follow them."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

from plugvm.testing.errors import GuestExitedError


class Qmp:
    """Connects to `-qmp unix:PATH,server=on,wait=off`, negotiates capabilities, then
    runs commands one at a time; events that arrive meanwhile are kept for wait_event()."""

    def __init__(self, path: Path, timeout: float = 60.0):
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._sock = socket.socket(socket.AF_UNIX)
                self._sock.settimeout(timeout)
                self._sock.connect(str(path))
                break
            except OSError:
                self._sock.close()
                if time.monotonic() > deadline:
                    raise GuestExitedError(f"QMP socket {path} did not accept within {timeout:.0f} s") from None
                time.sleep(0.05)
        self._file = self._sock.makefile("rwb")
        self.events: list[dict] = []
        self._read()                                  # the greeting
        self.execute("qmp_capabilities")

    def _read(self) -> dict:
        line = self._file.readline()
        if not line:
            raise GuestExitedError("QEMU closed its QMP socket")
        return json.loads(line)

    def execute(self, command: str, **arguments) -> object:
        """Run a command; its "return" value, or RuntimeError with QEMU's error."""
        self._file.write(json.dumps({"execute": command, **({"arguments": arguments} if arguments else {})})
                         .encode() + b"\n")
        self._file.flush()
        while True:
            reply = self._read()
            if "event" in reply:
                self.events.append(reply)
            elif "error" in reply:
                raise RuntimeError(f"QMP {command}: {reply['error'].get('desc', reply['error'])}")
            else:
                return reply.get("return")

    def wait_event(self, name: str, timeout: float = 60.0, **data) -> dict:
        """The first event `name` whose data has the given items (DEVICE_DELETED comes
        for a device's children too: device="dev0" picks the device's own)."""
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self.events):
                if event["event"] == name and all(event.get("data", {}).get(k) == v for k, v in data.items()):
                    return self.events.pop(i)
            self._sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                reply = self._read()
            except socket.timeout:
                raise GuestExitedError(f"no QMP event {name} within {timeout:.0f} s") from None
            if "event" in reply:
                self.events.append(reply)

    def close(self) -> None:
        for closing in (self._file, self._sock):
            try:
                closing.close()
            except OSError:
                pass
