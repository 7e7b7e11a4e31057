"""The API's unix socket and the waitress server on it.

As cloud-hypervisor: an exclusive flock on `<socket>.lock` keeps a second plugvm off
the path, a stale socket file is replaced, and the socket is for its owner only
(mode 0600). A plugvm that finds the path taken touches nothing there; one that
ends removes its socket and its lock file. `fd=N` serves on a listening socket the
caller passed in. No TCP.
"""

from __future__ import annotations

import fcntl
import json
import os
import resource
import socket
import stat
import threading

import waitress
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import BaseWSGIServer
from waitress.task import ErrorTask, WSGITask
from waitress.wasyncore import _DISCONNECTED

from plugvm.api.app import MAX_BODY
from plugvm.api.received_fds import ENVIRON_KEY, MAX_PER_MESSAGE, ReceivedFds
from plugvm.errors import PlugvmError
from plugvm.logs import get_logger

log = get_logger(__name__)
# Bodies over MAX_BODY get the API's own 400; waitress's 413 only stops what is far larger,
# before it would buffer it.
WAITRESS_BODY_LIMIT = 4 * MAX_BODY
# Open connections waitress keeps before it stops accepting (its default, 100, let a
# hundred idle clients take the API away for channel_timeout, 120 s). An idle
# connection costs an fd and no thread: requests reach a thread only when complete.
CONNECTION_LIMIT = 1000


class _Parser(HTTPRequestParser):
    """A request as waitress parses it, with the fds that arrived with its bytes."""

    def __init__(self, adj):
        super().__init__(adj)
        self.received_fds = ReceivedFds()


class _KeepAliveTask(WSGITask):
    """waitress (3.0) closes every HTTP/1.1 response that has no Content-Length, 204s
    included, which must not have one (RFC 9110 §8.6): each of cloud-hypervisor's many
    204s would cost its client a new connection, and a client that reuses connections
    (Kata's Go client) a failed request. A body-less answer keeps the connection open
    unless the client or the app asked to close it."""

    def build_response_header(self):
        keep = (not self.has_body and self.version == "1.1" and not self.close_on_finish
                and self.request.headers.get("CONNECTION", "").lower() != "close"
                and not any(name.lower() == "connection" for name, _ in self.response_headers))
        if not keep:
            return super().build_response_header()
        self.set_close_on_finish = lambda: None         # what the missing Content-Length would do
        try:
            return super().build_response_header()
        finally:
            del self.set_close_on_finish

    def get_environment(self):
        environ = super().get_environment()
        environ[ENVIRON_KEY] = self.request.received_fds
        return environ

    def execute(self):
        try:
            super().execute()
        finally:
            self.request.received_fds.close_unkept()        # answered: what the VMM did not keep goes


class _JsonErrorTask(ErrorTask):
    """The errors waitress answers itself (a malformed request line, a bad Content-Length,
    headers or a body too large, a transfer coding it lacks) in cloud-hypervisor's shape,
    a JSON array of strings, instead of waitress's text/plain page."""

    def execute(self):
        error = self.request.error
        body = json.dumps(["Error from API", f"{error.reason}: {error.body}"]).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.extend([("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        self.set_close_on_finish()          # the request could not be read: the stream is lost
        self.content_length = len(body)
        self.write(body)
        self.request.received_fds.close_unkept()


class _Channel(HTTPChannel):
    """A connection whose reads are recvmsg()s: fds sent with SCM_RIGHTS belong to the
    request whose bytes came with them (the one being parsed, else the next)."""

    task_class = _KeepAliveTask
    error_task_class = _JsonErrorTask
    parser_class = _Parser

    def __init__(self, *args, **kwargs):
        self._arrived: list[int] = []
        super().__init__(*args, **kwargs)

    def recv(self, buffer_size):
        try:
            data, fds, flags, _ = socket.recv_fds(self.socket, buffer_size, MAX_PER_MESSAGE,
                                                  socket.MSG_CMSG_CLOEXEC)
        except OSError as why:
            if why.args[0] in _DISCONNECTED:
                self.handle_close()
                return b""
            raise
        self._arrived.extend(fds)
        if flags & socket.MSG_CTRUNC:
            log.warning("a request sent more fds than plugvm takes at once; the kernel closed the rest",
                        taken=len(fds))
        if not data:
            self.handle_close()
            return b""
        return data

    def received(self, data):
        if self._arrived:
            fds, self._arrived = self._arrived, []
            with self.requests_lock:
                if self.request is None:
                    self.request = self.parser_class(self.adj)
                self.request.received_fds.add(fds)
        return super().received(data)

    def del_channel(self, map=None):
        # Every way a connection ends passes here (waitress's handle_close bypasses close()).
        # One lost mid-request: the fds of what was never answered go with it.
        arrived, self._arrived = self._arrived, []
        for fd in arrived:
            os.close(fd)
        if self.request is not None:
            self.request.received_fds.close_unkept()
        super().del_channel(map)


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


class ApiServer:
    def __init__(self, app, config, threads: int = 4):
        _room_for_connections()
        self.path = config.path
        self._lock_fd: int | None = None
        self._bound = False         # the socket file at path is ours to remove
        self.sock = self._open(config)
        try:
            self.server = waitress.create_server(app, sockets=[self.sock], threads=threads, ident="plugvm",
                                                 max_request_body_size=WAITRESS_BODY_LIMIT, clear_untrusted_proxy_headers=True,
                                                 connection_limit=CONNECTION_LIMIT)
            served_map = getattr(self.server, "map", None) or getattr(self.server, "_map", {})
            for served in {self.server, *served_map.values()}:
                if isinstance(served, BaseWSGIServer):
                    served.channel_class = _Channel
        except Exception:
            self.sock.close()
            self._release()
            raise
        self._thread = threading.Thread(target=self._serve, name="api", daemon=True)

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
        """Remove what this server made at the path: its socket, then its lock file,
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
