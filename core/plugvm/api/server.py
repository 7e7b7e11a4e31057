"""The API's unix socket and the waitress server on it.

As cloud-hypervisor: an exclusive flock on `<socket>.lock` keeps a second plugvm off
the path, a stale socket file is replaced, and the socket is for its owner only
(mode 0600). `fd=N` serves on a listening socket the caller passed in. No TCP.
"""

from __future__ import annotations

import fcntl
import os
import socket
import threading

import structlog
import waitress

from plugvm.api.app import MAX_BODY
from plugvm.errors import PlugvmError

log = structlog.get_logger(__name__)
# Bodies over MAX_BODY get the API's own 400; waitress's 413 only stops what is far larger,
# before it would buffer it.
WAITRESS_BODY_LIMIT = 4 * MAX_BODY


class ApiSocketError(PlugvmError, OSError):
    """The API socket cannot be created or used."""


class ApiServer:
    def __init__(self, app, config, threads: int = 4):
        self.path = config.path
        self._lock_fd: int | None = None
        self.sock = self._open(config)
        try:
            self.server = waitress.create_server(app, sockets=[self.sock], threads=threads, ident="plugvm",
                                                 max_request_body_size=WAITRESS_BODY_LIMIT, clear_untrusted_proxy_headers=True)
        except Exception:
            self._release()
            raise
        self._thread = threading.Thread(target=self._serve, name="api", daemon=True)

    def _open(self, config) -> socket.socket:
        if config.fd is not None:
            try:
                sock = socket.socket(fileno=config.fd)
            except OSError as e:
                raise ApiSocketError(f"--api-socket: fd={config.fd} is not a socket: {e.strerror}") from e
            if sock.family != socket.AF_UNIX:
                sock.detach()
                raise ApiSocketError(f"--api-socket: fd={config.fd} is not a unix socket")
            return sock
        path = str(self.path)
        try:
            self._lock_fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            self._release()
            why = "another plugvm is serving it" if e.errno in (11, 13) else e.strerror
            raise ApiSocketError(f"--api-socket: cannot use {path!r}: {why}") from e
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if os.path.lexists(path):
                os.unlink(path)           # stale: we hold the lock, so nobody serves it
            old_umask = os.umask(0o177)
            try:
                sock.bind(path)
            finally:
                os.umask(old_umask)
            os.chmod(path, 0o600)
            sock.listen(64)
        except OSError as e:
            sock.close()
            self._release()
            raise ApiSocketError(f"--api-socket: cannot listen on {path!r}: {e.strerror}") from e
        return sock

    def start(self) -> None:
        self._thread.start()
        log.info("API listening", socket=str(self.path) if self.path else f"fd={self.sock.fileno()}")

    def _serve(self) -> None:
        try:
            self.server.run()
        except Exception:        # the server loop ends when close() closes its sockets
            pass

    def close(self) -> None:
        try:
            self.server.close()
        except Exception:
            pass
        self._release()

    def _release(self) -> None:
        if self.path is not None and self._lock_fd is not None:
            try:
                os.unlink(self.path)
            except OSError:
                pass
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None
