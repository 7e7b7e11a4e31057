"""The host side's listening unix socket, bound by the VMM at `socket` (notes §3g).

It outlives a guest reboot: the device hands it over (VirtioDevice.handover()) and the
next boot's device takes it, so a host client's path never disappears while the VM
lives. It is removed when the device goes (removal, VM shutdown), and only if the
path is still the socket we bound, so a file someone put there since is left alone.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from plugvm.errors import PlugvmError
from plugvm.logs import get_logger

log = get_logger(__name__)
BACKLOG = 128


class VsockError(PlugvmError, OSError):
    """The vsock device cannot be created: its socket path exists or cannot be bound."""


class Listener:
    """Called on the thread creating the device (bind) and on its I/O thread (accept)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        if os.path.lexists(self.path):
            raise VsockError(f"--vsock: socket={str(self.path)!r} already exists: plugvm creates the socket "
                             "itself (and removes it when the device goes); remove it or choose another path")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            self.sock.bind(str(self.path))
            st = os.stat(self.path)
            self.sock.listen(BACKLOG)
        except OSError as e:
            self.sock.close()
            raise VsockError(f"--vsock: cannot bind socket={str(self.path)!r}: {e.strerror}") from e
        self._identity = (st.st_dev, st.st_ino)
        self.closed = False
        log.info("vsock socket bound", socket=str(self.path))

    def fileno(self) -> int:
        return self.sock.fileno()

    def accept(self) -> socket.socket | None:
        """A new host stream (non-blocking), or None when none is waiting; OSError when
        one waits but cannot be taken (EMFILE: out of fds)."""
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return None
        conn.setblocking(False)
        return conn

    def close(self) -> None:
        """Close the socket and remove its path (if it is still ours)."""
        if self.closed:
            return
        self.closed = True
        self.sock.close()
        try:
            st = os.lstat(self.path)
            if (st.st_dev, st.st_ino) == self._identity:
                os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("vsock: socket not removed", socket=str(self.path), error=e.strerror)
