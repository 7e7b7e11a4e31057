"""The file descriptors a client sent with one request (SCM_RIGHTS on the API socket), as
cloud-hypervisor's server receives them: Kata sends a tap fd with each vm.add-net.

The server (server.py) gathers them per request and puts them in the WSGI environ under
ENVIRON_KEY; the app hands them to the VMM with the request and keep()s those the VMM
then holds. Once the request is answered, the server closes every fd not kept, so an fd
of a request that failed, or one more than the request used, is never leaked."""

from __future__ import annotations

import os
import threading

from plugvm.logs import get_logger

log = get_logger(__name__)
ENVIRON_KEY = "plugvm.received_fds"
MAX_PER_MESSAGE = 16         # fds taken from one recvmsg; the kernel closes any beyond (MSG_CTRUNC)
# fds one request may bring in all: a client that sends its request a byte at a time,
# each with fds, cannot fill the VMM's fd table (those past this are closed at once).
MAX_PER_REQUEST = 16


class ReceivedFds:
    """The fds of one request, in the order they arrived."""

    def __init__(self):
        self._lock = threading.Lock()
        self._fds: list[int] = []
        self._kept: set[int] = set()

    @property
    def fds(self) -> list[int]:
        with self._lock:
            return list(self._fds)

    def add(self, fds: list[int]) -> None:
        with self._lock:
            room = max(MAX_PER_REQUEST - len(self._fds), 0)
            self._fds.extend(fds[:room])
            refused = fds[room:]
        for fd in refused:
            os.close(fd)
        if refused:
            log.warning("a request sent more fds than plugvm takes; the rest were closed",
                        taken=MAX_PER_REQUEST, closed=len(refused))

    def keep(self, fds) -> None:
        """These fds are the VMM's now (a device config holds them): not closed with the request."""
        with self._lock:
            self._kept.update(fd for fd in fds if fd in self._fds)

    def close_unkept(self) -> None:
        """Close every fd that was not kept; called once the request is answered (or lost)."""
        with self._lock:
            closing = [fd for fd in self._fds if fd not in self._kept]
            self._fds, self._kept = [], set()
        for fd in closing:
            try:
                os.close(fd)
            except OSError:
                log.warning("a received fd was already closed", fd=fd)
        if closing:
            log.debug("closed received fds the request did not use", fds=closing)
