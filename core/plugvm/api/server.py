"""The waitress server on the API's socket (plugvm.api.listener).

Imported by the "api" thread (ApiService) once the VM runs, never on the path to the
guest's first instruction: with Falcon this module costs about 50 ms on the host and
seconds under the lab's TCG.
"""

from __future__ import annotations

import json
import logging
import os
import socket

import waitress
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import BaseWSGIServer
from waitress.task import ErrorTask, WSGITask
from waitress.wasyncore import _DISCONNECTED

from plugvm.api.app import MAX_BODY, create_app
from plugvm.api.listener import CONNECTION_LIMIT, ApiListener
from plugvm.api.received_fds import ENVIRON_KEY, MAX_PER_MESSAGE, ReceivedFds
from plugvm.logs import get_logger

log = get_logger(__name__)
# Bodies over MAX_BODY get the API's own 400; waitress's 413 only stops what is far larger,
# before it would buffer it.
WAITRESS_BODY_LIMIT = 4 * MAX_BODY
# waitress warns on stderr whenever a request waits for a worker thread ("Task queue
# depth is 1"): requests that came before the app existed always do, which is no news.
logging.getLogger("waitress.queue").setLevel(logging.ERROR)


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


class ApiServer:
    """Falcon's app for `vmm`, served by waitress on `listener`'s socket until close()."""

    def __init__(self, vmm, listener: ApiListener, threads: int = 4):
        self.listener = listener
        self.server = waitress.create_server(create_app(vmm), sockets=[listener.sock], threads=threads,
                                             ident="plugvm", max_request_body_size=WAITRESS_BODY_LIMIT,
                                             clear_untrusted_proxy_headers=True, connection_limit=CONNECTION_LIMIT)
        served_map = getattr(self.server, "map", None) or getattr(self.server, "_map", {})
        for served in {self.server, *served_map.values()}:
            if isinstance(served, BaseWSGIServer):
                served.channel_class = _Channel

    def run(self) -> None:
        try:
            self.server.run()
        except Exception:        # the server loop ends when close() closes its sockets
            pass

    def close(self) -> None:
        try:
            self.server.close()
        except Exception:
            pass
