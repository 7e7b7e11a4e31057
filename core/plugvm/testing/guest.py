"""A VMM process running the test guest, with the guest's serial console attached."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from plugvm.testing.console import Console
from plugvm.testing.errors import GuestExitedError
from plugvm.testing.guest_image import GuestImage


class Guest:
    """Starts argv (a VMM whose serial console is its stdin/stdout) and wraps its console.

    The VMM's stderr goes to logs/vmm-stderr.log, the console to logs/console.log.
    """

    def __init__(self, argv: list[str], image: GuestImage, logs: Path, name: str = "guest"):
        self.argv = argv
        self.image = image
        logs.mkdir(parents=True, exist_ok=True)
        self.stderr_log = logs / f"{name}-stderr.log"
        self.console_log = logs / f"{name}-console.log"
        self.started = time.monotonic()
        self.boot_seconds: float | None = None
        with open(self.stderr_log, "wb") as err:
            self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err)
        self.console = Console(self.process.stdout, self.process.stdin, self.console_log)

    def wait_ready(self, timeout: float = 180.0) -> "Guest":
        """Wait for the ready marker and the shell's prompt; the guest then takes commands."""
        self.console.wait_for(self.image.ready_marker, timeout)
        self.boot_seconds = time.monotonic() - self.started
        self.console.wait_for(self.image.prompt, 30)
        return self

    def wait_exit(self, timeout: float = 60.0) -> int:
        """Wait for the VMM to end and return its exit status."""
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise GuestExitedError(f"the VMM did not exit within {timeout:.0f} s; console ended with:\n"
                                   + self.console.text[-2000:]) from None

    def poweroff(self, timeout: float = 60.0, *, through_init: bool = False) -> int:
        """Power the guest off from its shell and return the VMM's exit status.

        By default `poweroff -f`: busybox syncs, then goes straight to the kernel's ACPI
        power-off (S5), the same exit as through init, which first spends 2 s sending
        SIGTERM and SIGKILL to every process. through_init=True takes init's way."""
        self.console.send("poweroff\n" if through_init else "poweroff -f\n")
        return self.wait_exit(timeout)

    def stderr(self) -> str:
        return self.stderr_log.read_text(errors="replace")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                stream.close()
            except OSError:
                pass
        self.console.close()
