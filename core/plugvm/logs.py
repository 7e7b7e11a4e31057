"""structlog setup: events go to stderr or --log-file, never to the guest's console stream."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import structlog

from plugvm.host_files import open_path

_LEVELS = [logging.WARNING, logging.INFO, logging.DEBUG]


def configure(verbosity: int = 0, log_file: Path | None = None) -> None:
    """-v gives info, -vv debug, as cloud-hypervisor's -v does."""
    if log_file:
        fd = open_path(log_file, "--log-file", kinds=("file", "char"), write=True, create=True, append=True)
        stream = os.fdopen(fd, "a", buffering=1)
    else:
        stream = sys.stderr
    structlog.configure(
        processors=[structlog.processors.add_log_level, structlog.processors.TimeStamper(fmt="iso"),
                    structlog.processors.KeyValueRenderer(key_order=["timestamp", "level", "event"])],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS[min(verbosity, len(_LEVELS) - 1)]),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
