"""The errors of the vhost-user frontend, one family per thing that can go wrong.

Connecting, decoding bytes, describing guest memory and exchanging messages each fail
in their own way; a device catches BackendError around any exchange and
BackendGone where the backend dying is an expected end (unplug, reset).
"""

from __future__ import annotations

from plugvm.errors import PlugvmError


class VhostUserError(PlugvmError):
    """Root of the vhost-user frontend's errors."""


class MessageError(VhostUserError, ValueError):
    """Bytes or values that do not encode or decode as a vhost-user payload."""


class ConnectError(VhostUserError, ConnectionError):
    """The backend's socket could not be connected to (its path and the reason in the message)."""


class MemoryTableError(VhostUserError, ValueError):
    """Guest memory a backend cannot map (not a shared memfd), or a guest address outside it."""


class BackendLimitError(VhostUserError, ValueError):
    """The backend cannot do what was asked: fewer queues than needed, no memory slot left."""


class BackendError(VhostUserError, OSError):
    """An exchange with the backend failed; `request` names the message it was about."""

    def __init__(self, message: str, request: str = ""):
        super().__init__(message)
        self.request = request

    def __str__(self) -> str:
        return self.args[0]


class ReplyError(BackendError):
    """The backend's reply does not match the request: code, REPLY flag, version or size."""


class BackendNack(BackendError):
    """The backend answered a REPLY_ACK request with a non-zero status."""

    def __init__(self, message: str, request: str = "", status: int = 0):
        super().__init__(message, request)
        self.status = status


class BackendTimeout(BackendError, TimeoutError):
    """The backend did not answer within the reply timeout."""


class BackendGone(BackendError, ConnectionError):
    """The backend closed the connection (EOF, EPIPE, ECONNRESET), possibly mid-message."""
