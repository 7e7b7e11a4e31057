"""The API's listening unix socket, bound before the VM boots.

As cloud-hypervisor: an exclusive flock on `<socket>.lock` keeps a second plugvm off
the path, a stale socket file is replaced, and the socket is for its owner only
(mode 0600). A plugvm that finds the path taken touches nothing there; one that
ends removes its socket and its lock file. `fd=N` serves on a listening socket the
caller passed in. No TCP.

Only the standard library here: the command line binds the socket (so that a bad
--api-socket is an error before anything boots, and a client that connects early
waits in the backlog) long before Falcon and waitress are imported (plugvm.api.server),
which ApiService leaves to its own thread, started once the VM runs.
"""

from __future__ import annotations

import fcntl
import os
import resource
import socket
import stat
import threading

from plugvm.errors import PlugvmError
from plugvm.logs import get_logger

log = get_logger(__name__)

# Open connections waitress keeps before it stops accepting (its default, 100, let a
# hundred idle clients take the API away for channel_timeout, 120 s). An idle
# connection costs an fd and no thread: requests reach a thread only when complete.
CONNECTION_LIMIT = 1000


class ApiSocketError(PlugvmError, OSError):
    """The API socket cannot be created or used."""


# sun_path is 108 bytes with its NUL (unix(7)).
MAX_SOCKET_PATH = 107


def _lock(path: str) -> int:
    """Take the exclusive flock on `<path>.lock` and return its fd. A plugvm that exits
    cleanly unlinks the lock file while it still holds the lock; a contender that
    opened the old file then holds a lock nobody else will look at, so the inode
    locked must still be the one at the path (else open the new file and lock again)."""
    lock_path = path + ".lock"
    while True:
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        except OSError as e:
            raise ApiSocketError(f"--api-socket: cannot create the lock file {lock_path!r}: "
                                 f"{e.strerror or e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ApiSocketError(f"--api-socket: cannot use {path!r}: another plugvm is serving it") from None
        except OSError as e:
            os.close(fd)
            raise ApiSocketError(f"--api-socket: cannot lock {lock_path!r}: {e.strerror or e}") from e
        try:
            held, current = os.fstat(fd), os.stat(lock_path)
            if (held.st_dev, held.st_ino) == (current.st_dev, current.st_ino):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _room_for_connections() -> None:
    """Raise the soft fd limit (1024 on many systems) so that CONNECTION_LIMIT idle
    clients cannot leave the VMM without fds for its devices."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = CONNECTION_LIMIT + 1024
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want if hard == resource.RLIM_INFINITY else min(want, hard), hard))


class ApiListener:
    """The listening socket of --api-socket (`sock`) and, for path=, the lock that
    makes it ours. close() removes what it made at the path and closes the socket."""

    def __init__(self, config):
        _room_for_connections()
        self.path = config.path
        self._lock_fd: int | None = None
        self._bound = False         # the socket file at path is ours to remove
        self.sock = self._open(config)

    def describe(self) -> str:
        return str(self.path) if self.path else f"fd={self.sock.fileno()}"

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
        self._release()

    def _open(self, config) -> socket.socket:
        if config.fd is not None:
            return self._inherited(config.fd)
        path = str(self.path)
        if len(os.fsencode(path)) > MAX_SOCKET_PATH:
            raise ApiSocketError(f"--api-socket: the path is {len(os.fsencode(path))} bytes; a unix socket's "
                                 f"path has at most {MAX_SOCKET_PATH}")
        self._lock_fd = _lock(path)
        # From here on we hold the lock: nobody else serves this path, and what we
        # touch there is ours. Only a stale socket is replaced, never another file.
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            try:
                mode = os.lstat(path).st_mode
            except FileNotFoundError:
                mode = None
            if mode is not None and not stat.S_ISSOCK(mode):
                raise ApiSocketError(f"--api-socket: {path!r} exists and is not a socket; not replacing it")
            if mode is not None:
                os.unlink(path)           # a stale socket: we hold the lock, so nobody serves it
            old_umask = os.umask(0o177)
            try:
                sock.bind(path)
            finally:
                os.umask(old_umask)
            self._bound = True
            os.chmod(path, 0o600)
            sock.listen(64)
        except ApiSocketError:
            sock.close()
            self._release()
            raise
        except OSError as e:
            sock.close()
            self._release()
            raise ApiSocketError(f"--api-socket: cannot listen on {path!r}: {e.strerror or e}") from e
        return sock

    @staticmethod
    def _inherited(fd: int) -> socket.socket:
        """fd=N: a listening unix stream socket the caller made (systemd-style)."""
        try:
            sock = socket.socket(fileno=fd)
        except OSError as e:
            raise ApiSocketError(f"--api-socket: fd={fd} is not a socket: {e.strerror or e}") from e
        try:
            listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        except OSError:
            listening = 0
        problem = ("is not a unix socket" if sock.family != socket.AF_UNIX else
                   "is not a stream socket" if sock.type != socket.SOCK_STREAM else
                   "is not listening (a connected or socketpair end?)" if not listening else None)
        if problem:
            sock.detach()
            raise ApiSocketError(f"--api-socket: fd={fd} {problem}")
        return sock

    def _release(self) -> None:
        """Remove what this listener made at the path: its socket, then its lock file,
        unlinked while still locked (see _lock), then the lock itself."""
        if self._bound:
            try:
                os.unlink(self.path)
            except OSError:
                pass
            self._bound = False
        if self._lock_fd is not None:
            try:
                os.unlink(str(self.path) + ".lock")
            except OSError:
                pass
            os.close(self._lock_fd)
            self._lock_fd = None


class ApiService:
    """--api-socket: the socket bound at once (an ApiListener: a bad path is an error
    before anything boots), and the "api" thread start() begins, which imports Falcon
    and waitress, makes the app and serves it until close()."""

    def __init__(self, config, vmm):
        self.listener = ApiListener(config)
        self._vmm = vmm
        self._lock = threading.Lock()       # close() against the thread making the server
        self._server = None
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="api", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _serve(self) -> None:
        try:
            from plugvm.api.server import ApiServer

            with self._lock:
                if self._closed:
                    return
                self._server = ApiServer(self._vmm, self.listener)
        except Exception:           # a broken install: no API is no VMM a client can drive
            log.exception("the API cannot be served")
            self._vmm.request_exit(1, "the API cannot be served")
            return
        log.info("API listening", socket=self.listener.describe())
        self._server.run()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            server = self._server
        if server is not None:
            server.close()
        self.listener.close()
