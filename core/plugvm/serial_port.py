"""The host ends of the guest's two consoles: where the bytes of COM1 (--serial) and of the
virtio-console (--console) go and come from, in the modes off|null|tty|file=PATH.

The backends outlive each boot of the VM (a guest reboot builds a new UART and a new
virtio-console and attaches them), so the terminal and the input thread stay as they were.
plugvm's stdin has one reader for the whole process (_Stdin), and the device attached to
the tty backend gets what is typed; when both are tty (cloud-hypervisor warns, and so
does Consoles.configure) it is the serial port's.
"""

from __future__ import annotations

import fcntl
import os
import struct
import sys
import termios
import threading
import tty
from pathlib import Path

from plugvm.config.console import DOUBLE_TTY
from plugvm.host_files import open_path
from plugvm.logs import get_logger

log = get_logger(__name__)
IOV_MAX = 1024


class _Stdin:
    """plugvm's stdin: one thread reads it, for the life of the process, and hands what it
    reads to the tty backend that holds it (nothing holds it: the bytes are dropped)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._owner: ConsoleBackend | None = None
        self._started = False
        self._saved_tty = None

    def acquire(self, backend: ConsoleBackend, stdin) -> None:
        with self._lock:
            self._owner = backend
            if self._started:
                self._raw()
                return
            try:
                self._fd = stdin.fileno()
                os.fstat(self._fd)
            except (OSError, ValueError, AttributeError):
                return   # no stdin (closed): output only
            self._started = True
            self._raw()
            threading.Thread(target=self._pump, name="console-input", daemon=True).start()

    def _raw(self) -> None:
        if os.isatty(self._fd) and self._saved_tty is None:
            # Raw mode, as cloud-hypervisor does: keys go to the guest, not to our terminal.
            self._saved_tty = termios.tcgetattr(self._fd)
            tty.setraw(self._fd)

    def release(self, backend: ConsoleBackend) -> None:
        with self._lock:
            if self._owner is not backend:
                return
            self._owner = None
            if self._saved_tty is not None:
                termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved_tty)
                self._saved_tty = None

    def _pump(self) -> None:
        while True:
            try:
                data = os.read(self._fd, 4096)
            except OSError:
                return
            if not data:
                return
            owner = self._owner
            if owner is not None:
                owner.received(data)


_STDIN = _Stdin()


class ConsoleBackend:
    """One console's host end. mode: 'off' or 'null' (output discarded), 'tty' (our stdout;
    input from our stdin) or 'file' (appended to path). `option` names it in errors."""

    def __init__(self, mode: str, path: Path | None = None, option: str = "--serial", stdin=None):
        self.mode = mode
        self.path = path
        self._out_fd: int | None = None
        self._receiver = None
        if mode == "tty":
            self._out_fd = sys.stdout.fileno()
            _STDIN.acquire(self, sys.stdin if stdin is None else stdin)
        elif mode == "file":
            # A regular file, or a character device (/dev/null, a pty); never a FIFO, on
            # which a reader that stops reading would stop the vCPU or I/O thread that prints.
            self._out_fd = open_path(path, option, "file", kinds=("file", "char"), write=True, create=True,
                                     append=True)

    def attach(self, receiver) -> None:
        """The device of the current boot (its receive(data) method) gets the input from now on."""
        self._receiver = receiver

    def detach(self, receiver) -> None:
        """A device that is closing stops getting input (unless another took its place)."""
        if self._receiver is receiver:
            self._receiver = None

    def received(self, data: bytes) -> None:
        """Called on the input thread with what was read from stdin."""
        receiver = self._receiver
        if receiver is not None:
            receiver.receive(data)

    def window_size(self) -> tuple[int, int]:
        """(columns, rows) of the terminal in tty mode, as TIOCGWINSZ gives them; (0, 0) otherwise."""
        if self.mode != "tty" or self._out_fd is None or not os.isatty(self._out_fd):
            return 0, 0
        try:
            rows, cols, _, _ = struct.unpack("HHHH", fcntl.ioctl(self._out_fd, termios.TIOCGWINSZ, bytes(8)))
        except OSError:
            return 0, 0
        return cols, rows

    def write(self, data: bytes) -> None:
        self.writev([data])

    def writev(self, buffers) -> None:
        """Write every byte of the buffers (bytes or memoryviews onto guest memory, not copied)."""
        buffers = [memoryview(b).cast("B") for b in buffers if len(b)]
        while buffers and self._out_fd is not None:
            try:
                done = os.writev(self._out_fd, buffers[:IOV_MAX])
            except InterruptedError:
                continue
            except OSError as e:
                log.warning("console output failed; discarding it from now on", mode=self.mode, error=str(e))
                self._out_fd = None
                return
            while done and buffers:     # drop what was written; a short write goes on from there
                if done >= len(buffers[0]):
                    done -= len(buffers.pop(0))
                else:
                    buffers[0], done = buffers[0][done:], 0

    def close(self) -> None:
        self._receiver = None
        if self.mode == "tty":
            _STDIN.release(self)
        if self.mode == "file" and self._out_fd is not None:
            os.close(self._out_fd)
        self._out_fd = None


class Consoles:
    """The host ends of the serial port and the virtio-console, kept across boots."""

    def __init__(self, serial: ConsoleBackend | None = None, console: ConsoleBackend | None = None):
        self.serial = serial
        self.console = console

    @classmethod
    def for_config(cls, config) -> Consoles:
        consoles = cls()
        consoles.configure(config)
        return consoles

    def configure(self, config) -> None:
        """Make the backends match a VM config. A backend whose mode and path are unchanged
        stays (a tty keeps its input thread); a VM created after vm.delete writes where its
        own config says. Changed ones are all closed before any is opened, so a tty moving
        from the serial port to the console is released first."""
        wanted = {"serial": (config.serial.mode.value, config.serial.file),
                  "console": (config.console.mode.value, config.console.file)}
        if wanted["serial"][0] == wanted["console"][0] == "tty":
            log.warning(f"{DOUBLE_TTY}: both write to standard output; standard input goes to the serial port")
        stale = [name for name, mode_path in wanted.items()
                 if (backend := getattr(self, name)) is not None and (backend.mode, backend.path) != mode_path]
        for name in stale:
            getattr(self, name).close()
            setattr(self, name, None)
        # The console first: the last tty backend opened holds stdin, and with both on the
        # tty the serial port, which works from the first instruction, should.
        for name, (mode, path) in reversed(wanted.items()):
            if getattr(self, name) is None:
                setattr(self, name, ConsoleBackend(mode, path, f"--{name}"))

    def close(self) -> None:
        for name in ("serial", "console"):
            backend = getattr(self, name)
            if backend is not None:
                backend.close()
                setattr(self, name, None)
