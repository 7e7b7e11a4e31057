"""The vsock device's own epoll set, watched as one fd on the device's I/O thread.

DeviceContext.watch() only waits for readable fds; the muxer also needs to know when a
host socket can take more bytes (EPOLLOUT), and to stop listening to a socket while
the guest has no credit for it. So the host fds live in an epoll set of their own
(as cloud-hypervisor's muxer keeps one), whose fd is readable when any of them is
ready: the device watches that fd and calls dispatch().
"""

from __future__ import annotations

import select
from collections.abc import Callable

IN, OUT = select.EPOLLIN, select.EPOLLOUT
MAX_EVENTS = 256      # per dispatch(); the rest stay ready (level-triggered) for the next


class Poller:
    def __init__(self):
        self._epoll = select.epoll()
        self._handlers: dict[int, Callable[[int], None]] = {}

    def fileno(self) -> int:
        return self._epoll.fileno()

    def set(self, fd: int, mask: int, handler: Callable[[int], None]) -> None:
        """Call handler(events) while fd has any of `mask` ready. A mask of 0 removes fd
        altogether: epoll reports EPOLLHUP even for an empty mask, and a hung-up socket
        nobody reads would wake the thread forever."""
        if not mask:
            self.remove(fd)
        elif fd in self._handlers:
            self._epoll.modify(fd, mask)
            self._handlers[fd] = handler
        else:
            self._epoll.register(fd, mask)
            self._handlers[fd] = handler

    def remove(self, fd: int) -> None:
        if self._handlers.pop(fd, None) is not None:
            self._epoll.unregister(fd)

    def dispatch(self) -> int:
        """Run the handlers of the fds ready now (without waiting); how many ran."""
        events = self._epoll.poll(0, MAX_EVENTS)
        for fd, mask in events:
            handler = self._handlers.get(fd)
            if handler is not None:        # an earlier handler of this batch may have removed it
                handler(mask)
        return len(events)

    def close(self) -> None:
        self._handlers.clear()
        self._epoll.close()
