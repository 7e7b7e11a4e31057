"""Where COM1's bytes go and come from: --serial off|null|tty|file=PATH.

The backend outlives each boot of the VM (a guest reboot builds a new UART and
attaches it), so the terminal and the input thread stay as they were.
"""

from __future__ import annotations

import os
import sys
import termios
import threading
import tty
from pathlib import Path

import structlog

from plugvm.host_files import open_path

log = structlog.get_logger(__name__)


class SerialBackend:
    """mode: 'null' (discard), 'tty' (our stdout; input from our stdin) or 'file'."""

    def __init__(self, mode: str, path: Path | None = None):
        self.mode = mode
        self.path = path
        self._out_fd: int | None = None
        self._serial = None
        self._saved_tty = None
        if mode == "tty":
            self._out_fd = sys.stdout.fileno()
            self._start_input(sys.stdin)
        elif mode == "file":
            # A regular file, or a character device (/dev/null, a pty); never a FIFO, on
            # which a reader that stops reading would stop the vCPU that prints.
            self._out_fd = open_path(path, "--serial", "file", kinds=("file", "char"), write=True, create=True,
                                     append=True)

    def _start_input(self, stdin) -> None:
        try:
            fd = stdin.fileno()
            os.fstat(fd)
        except (OSError, ValueError, AttributeError):
            return   # no stdin (closed): output only
        if os.isatty(fd):
            # Raw mode, as cloud-hypervisor does: keys go to the guest, not to our terminal.
            self._saved_tty = (fd, termios.tcgetattr(fd))
            tty.setraw(fd)
        threading.Thread(target=self._pump, args=(fd,), name="serial-input", daemon=True).start()

    def _pump(self, fd: int) -> None:
        while True:
            try:
                data = os.read(fd, 4096)
            except OSError:
                return
            if not data:
                return
            serial = self._serial
            if serial is not None:
                serial.receive(data)

    def attach(self, serial) -> None:
        """The UART of the current boot receives the input from now on."""
        self._serial = serial

    def write(self, data: bytes) -> None:
        if self._out_fd is None:
            return
        try:
            os.write(self._out_fd, data)
        except OSError as e:
            log.warning("serial output failed; discarding it from now on", error=str(e))
            self._out_fd = None

    def close(self) -> None:
        if self._saved_tty:
            fd, attrs = self._saved_tty
            termios.tcsetattr(fd, termios.TCSADRAIN, attrs)
            self._saved_tty = None
        if self.mode == "file" and self._out_fd is not None:
            os.close(self._out_fd)
            self._out_fd = None
