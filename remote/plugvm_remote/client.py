"""A minimal HTTP/1.1 client over a unix socket, sending what ch-remote sends.

ch-remote (api_client/src/lib.rs) writes ``Host: localhost``, ``Accept: */*``,
``Content-Length`` only when there is a body, and no ``Content-Type``.  It
reads the body only when the response carries ``Content-Length``.  File
descriptors (add-net ``fd=``, add-device ``fd=``) ride along with the request
headers as SCM_RIGHTS, as ch-remote's ``send_with_fds`` does.
"""

from __future__ import annotations

import array
import http.client
import socket
from typing import Sequence

from plugvm_remote.errors import IoError, RemoteError, ServerResponseError

API_ROOT = "/api/v1/"


class SocketError(RemoteError):
    """Writing to or reading from the API socket failed."""

    def __str__(self) -> str:
        return "Error writing to or reading from HTTP socket"


class UnixHTTPConnection(http.client.HTTPConnection):
    """HTTPConnection whose transport is an AF_UNIX stream socket.

    ``fds`` are sent once, attached to the first bytes written.
    """

    def __init__(self, path: str, fds: Sequence[int] = (), timeout: float | None = None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path
        self._pending_fds = list(fds)

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock

    def send(self, data) -> None:  # type: ignore[override]
        if self.sock is None:
            self.connect()
        if self._pending_fds and isinstance(data, (bytes, bytearray)):
            ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", self._pending_fds))]
            self._pending_fds = []
            sent = self.sock.sendmsg([data], ancillary)
            data = data[sent:]
            if not data:
                return
        super().send(data)


# ch-remote waits for ever; a server that accepts and never answers (or answers only
# 100 Continue) must not hang a script for good. Every socket operation gets this long.
DEFAULT_TIMEOUT = 120.0


class ApiClient:
    """One API request per connection, like ch-remote (which makes exactly one)."""

    def __init__(self, socket_path: str, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._conn: UnixHTTPConnection | None = None

    def connect(self, fds: Sequence[int] = ()) -> None:
        """Open the socket now; raises OSError when it cannot be opened."""
        conn = UnixHTTPConnection(self.socket_path, fds, self.timeout)
        conn.connect()
        self._conn = conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def request(self, method: str, command: str, body: str | None = None,
                fds: Sequence[int] = (), headers: dict | None = None) -> str | None:
        """Send ``method /api/v1/<command>``; return the body, or None without Content-Length.
        `headers` are sent besides ch-remote's own (plugvm's ``Prefer: wait``).

        Raises ServerResponseError for any status but 100/200/204, SocketError on I/O failure.
        """
        if self._conn is None:
            self.connect(fds)
        elif fds:
            self._conn._pending_fds = list(fds)
        conn = self._conn
        payload = body.encode() if body is not None else None
        try:
            conn.putrequest(method, API_ROOT + command, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", "localhost")
            conn.putheader("Accept", "*/*")
            for name, value in (headers or {}).items():
                conn.putheader(name, value)
            if payload is not None:
                conn.putheader("Content-Length", str(len(payload)))
            conn.endheaders(payload)
            response = conn.getresponse()
            length = response.getheader("Content-Length")
            text = response.read().decode("utf-8", "replace") if length is not None else None
        except (OSError, http.client.HTTPException) as e:
            cause = IoError(e) if isinstance(e, OSError) else RemoteError(str(e))
            raise SocketError() from cause
        finally:
            self.close()
        if response.status not in (100, 200, 204):
            raise ServerResponseError(response.status, text)
        return text
