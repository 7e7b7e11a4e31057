"""The error family of plugvm-remote, and ch-remote's error-chain report.

Each error's ``str`` is one line of the chain; causes are linked with
``raise ... from`` so the printed chain is the ``__cause__`` walk, exactly
like ch-remote walks ``Error::source()``.
"""

from __future__ import annotations

import json
from typing import Iterator

PROGRAM = "plugvm-remote"

# api_client/src/lib.rs StatusCode::from_raw: these names, anything else Unknown.
STATUS_NAMES = {
    100: "Continue",
    200: "Ok",
    204: "NoContent",
    400: "BadRequest",
    404: "NotFound",
    429: "TooManyRequests",
    500: "InternalServerError",
    501: "NotImplemented",
}


class RemoteError(Exception):
    """Root of every error plugvm-remote reports (exit code 1)."""


class CommandError(RemoteError):
    """Top of a chain: what the command was doing (``Error parsing disk syntax``)."""


class ConfigSyntaxError(RemoteError, ValueError):
    """A ``key=value,...`` device string or a size/count argument is invalid."""


class IoError(RemoteError, OSError):
    """An OSError rendered the way Rust displays ``std::io::Error``."""

    def __init__(self, err: OSError) -> None:
        super().__init__(err.errno, err.strerror)
        self.os_error = err

    def __str__(self) -> str:
        if self.os_error.errno is None:
            return str(self.os_error)
        return f"{self.os_error.strerror} (os error {self.os_error.errno})"


class ServerResponseError(RemoteError):
    """The server answered with a status that is not Ok/NoContent/Continue."""

    def __init__(self, status: int, body: str | None) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body

    @property
    def status_name(self) -> str:
        return STATUS_NAMES.get(self.status, "Unknown")

    def __str__(self) -> str:
        return f"Server responded with error {self.status_name}: {self.body!r}"

    def chain_lines(self, level: int, indent: str) -> list[str]:
        """ch-remote's server_api_error_display_modifier: the status, then the body's strings."""
        body = self.body or ""
        try:
            messages = json.loads(body)
            if not isinstance(messages, list) or not all(isinstance(m, str) for m in messages):
                raise ValueError("expected a JSON array of strings")
        except ValueError as e:
            return [f"{indent}X: Can't get remote's error messages from JSON response: {e}: body='{body}'"]
        lines = [f"Server responded with {self.status_name}", *messages]
        return [f"{indent}{level + i}: {line}" for i, line in enumerate(lines)]


def _causes(top: BaseException) -> Iterator[BaseException]:
    err: BaseException | None = top
    while err is not None:
        yield err
        err = err.__cause__


def format_error_chain(top: BaseException) -> str:
    """Render ``top`` as cloud_hypervisor::cli_print_error_chain does, with our program name."""
    head = f"Error: {PROGRAM} exited with the following"
    if top.__cause__ is None and not isinstance(top, ServerResponseError):
        return f"{head} error:\n  {top}\n"
    lines = [f"{head} chain of errors:"]
    for level, err in enumerate(_causes(top)):
        if isinstance(err, ServerResponseError):
            lines.extend(err.chain_lines(level, "  "))
        else:
            lines.append(f"  {level}: {err}")
    return "\n".join(lines) + "\n"
