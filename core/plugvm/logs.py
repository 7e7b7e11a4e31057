"""plugvm's logging: structlog, its events to stderr or --log-file, never to the guest's
console stream.

Modules take their logger from get_logger(), not from structlog itself: importing
structlog costs about 100 ms (it pulls in asyncio, and rich where that is installed),
half of plugvm's start-up, for events that by default (no -v) are below the level
printed. So a logger asks the configured level first and imports structlog on the
first event that will be printed. Until configure() is called (a library user, a
test), every event goes to structlog as configured there, as before.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

from plugvm.host_files import open_path

# The standard library's levels (logging.DEBUG is 10, ...), which structlog's filtering
# takes; not imported from logging, which costs 5 ms of start-up to name five numbers.
DEBUG, INFO, WARNING, ERROR, CRITICAL = 10, 20, 30, 40, 50
_LEVELS = [WARNING, INFO, DEBUG]
_NAMES = {"debug": DEBUG, "info": INFO, "warning": WARNING, "error": ERROR, "exception": ERROR, "critical": CRITICAL}

_threshold: int | None = None      # the level printed, once configure() ran
_pending: tuple | None = None      # configure()'s stream and level, applied when structlog is first needed
_lock = threading.Lock()


def _structlog():
    """structlog, imported (and configured, if configure() ran) on first use."""
    global _pending
    import structlog

    with _lock:
        pending, _pending = _pending, None
    if pending is not None:
        stream, level = pending
        structlog.configure(
            processors=[structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso"),
                        structlog.processors.format_exc_info,
                        structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "event"])],
            wrapper_class=structlog.make_filtering_bound_logger(level),
            logger_factory=structlog.PrintLoggerFactory(file=stream),
            cache_logger_on_first_use=False,
        )
    return structlog


class Logger:
    """structlog's bound logger for `name`, made when an event is to be printed."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name

    def _emit(self, method: str, event: str, kw: dict) -> None:
        threshold = _threshold
        if threshold is not None and _NAMES[method] < threshold:
            return
        getattr(_structlog().get_logger(self.name), method)(event, **kw)

    def debug(self, event: str, **kw) -> None:
        self._emit("debug", event, kw)

    def info(self, event: str, **kw) -> None:
        self._emit("info", event, kw)

    def warning(self, event: str, **kw) -> None:
        self._emit("warning", event, kw)

    def error(self, event: str, **kw) -> None:
        self._emit("error", event, kw)

    def exception(self, event: str, **kw) -> None:
        # Called in an except block: structlog finds the exception in sys.exc_info().
        self._emit("exception", event, kw)

    def critical(self, event: str, **kw) -> None:
        self._emit("critical", event, kw)


def get_logger(name: str) -> Logger:
    return Logger(name)


def configure(verbosity: int = 0, log_file: Path | None = None) -> None:
    """-v gives info, -vv debug, as cloud-hypervisor's -v does."""
    global _threshold, _pending
    if log_file:
        fd = open_path(log_file, "--log-file", kinds=("file", "char"), write=True, create=True, append=True)
        stream = os.fdopen(fd, "a", buffering=1)
    else:
        stream = sys.stderr
    level = _LEVELS[min(verbosity, len(_LEVELS) - 1)]
    with _lock:
        _pending = (stream, level)
        _threshold = level
    if "structlog" in sys.modules:
        _structlog()            # already paid for: apply the configuration now
