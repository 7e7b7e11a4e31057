"""--api-socket path=PATH|fd=N|PATH: where the REST API listens (cloud-hypervisor/src/main.rs
parse_api_socket)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from plugvm.config.errors import Where
from plugvm.config.options import Options, split_items

WHERE = Where("--api-socket")
MAX_FD = 2**31 - 1     # a RawFd is a C int


@dataclass(frozen=True)
class ApiSocketConfig:
    """A UNIX socket path for plugvm to create, or the number of a listening socket it inherited."""

    path: Path | None = None
    fd: int | None = None


def parse_api_socket(text: str) -> ApiSocketConfig:
    """ch reads `path=` or `fd=`; any other text is the path itself."""
    try:
        first = split_items(text)[0].partition("=")[0] if text.strip() else ""
    except ValueError:
        first = ""       # unbalanced quotes or brackets: a path that happens to contain them
    if first not in ("path", "fd"):
        if not text.strip():
            raise WHERE.error("expected path=PATH, fd=N or PATH, got an empty value")
        return ApiSocketConfig(path=Path(text))
    options = Options(text, WHERE, ("path", "fd"))
    if options.given("path") and options.given("fd"):
        raise WHERE.error("give either path= or fd=, not both")
    if options.given("fd"):
        return ApiSocketConfig(fd=options.integer("fd", 0, MAX_FD)) if options.text("fd") else _empty("fd")
    path = options.text("path")
    return ApiSocketConfig(path=Path(path)) if path else _empty("path")


def _empty(key: str) -> ApiSocketConfig:
    raise WHERE.error(f"{key}= needs a value")
