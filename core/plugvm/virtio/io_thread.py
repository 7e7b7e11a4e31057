"""The I/O thread of one virtio device: it waits on the queues' ioeventfds and the fds
the device watches, and calls the device — never on a vCPU thread, so a slow disk
never stalls a vCPU, and a device is never called concurrently with itself."""

from __future__ import annotations

import os
import select
import threading
from collections.abc import Callable

from plugvm.logs import get_logger
from plugvm.thread_names import name_this_thread

log = get_logger(__name__)


class IoThread:
    """An epoll loop; call() runs a function on the thread and waits for it, so the
    transport can activate, reset and close the device from a vCPU thread safely."""

    def __init__(self, name: str, on_error: Callable[[BaseException], None]):
        self._epoll = select.epoll()
        self._wake = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        self._handlers: dict[int, Callable[[], None]] = {}
        self._calls: list[tuple[Callable[[], object], threading.Event, list]] = []
        self._lock = threading.Lock()
        self._stopping = False
        self._on_error = on_error
        self._epoll.register(self._wake, select.EPOLLIN)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def watch(self, fd: int, handler: Callable[[], None]) -> None:
        """From the I/O thread (or before anything runs): call handler when fd is readable."""
        if fd in self._handlers:
            self._epoll.modify(fd, select.EPOLLIN)
        else:
            self._epoll.register(fd, select.EPOLLIN)
        self._handlers[fd] = handler

    def unwatch(self, fd: int) -> None:
        if self._handlers.pop(fd, None) is not None:
            self._epoll.unregister(fd)

    def call(self, function: Callable[[], object], timeout: float = 30.0):
        """Run function on the I/O thread and return its result (or raise its exception)."""
        if threading.current_thread() is self._thread:
            return function()
        done, box = threading.Event(), []
        with self._lock:
            self._calls.append((function, done, box))
        os.eventfd_write(self._wake, 1)
        if not done.wait(timeout):
            raise TimeoutError(f"{self._thread.name}: the device did not answer in {timeout} s")
        if box and isinstance(box[0], BaseException):
            raise box[0]
        return box[0] if box else None

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._stopping = True
        os.eventfd_write(self._wake, 1)
        self._thread.join(10)
        self._epoll.close()
        os.close(self._wake)

    def _run(self) -> None:
        name_this_thread(self._thread.name)
        while not self._stopping:
            try:
                events = self._epoll.poll()
            except InterruptedError:
                continue
            for fd, _ in events:
                if fd == self._wake:
                    os.eventfd_read(self._wake)
                    self._run_calls()
                    continue
                handler = self._handlers.get(fd)
                if handler is None:
                    continue
                try:
                    handler()
                except BaseException as e:     # the device's fault: report it, keep the thread
                    self._on_error(e)

    def _run_calls(self) -> None:
        with self._lock:
            calls, self._calls = self._calls, []
        for function, done, box in calls:
            try:
                box.append(function())
            except BaseException as e:
                box.append(e)
            done.set()
