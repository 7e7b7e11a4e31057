"""The generic vhost-user frontend: plugvm's end of the control socket to a backend
process that serves a virtio device's queues itself (QEMU docs/interop/vhost-user.rst).

Device plugins (virtio-fs, vhost-user-blk, -net) import what they need from here:
Frontend and VringConfig (frontend.py), MemoryTable (memory_table.py), the errors
(errors.py); protocol.py holds the wire format. Nothing device-specific lives here.
"""

from plugvm.vhost_user.errors import (BackendError, BackendGone, BackendLimitError, BackendNack, BackendTimeout,
                                      ConnectError, MemoryTableError, MessageError, ReplyError, VhostUserError)
from plugvm.vhost_user.frontend import SUPPORTED_PROTOCOL_FEATURES, Frontend, Negotiation, VringConfig
from plugvm.vhost_user.memory_table import MemoryTable, SharedRegion
from plugvm.vhost_user.protocol import F_PROTOCOL_FEATURES, ProtocolFeature, Request

__all__ = ["BackendError", "BackendGone", "BackendLimitError", "BackendNack", "BackendTimeout", "ConnectError",
           "F_PROTOCOL_FEATURES", "Frontend", "MemoryTable", "MemoryTableError", "MessageError", "Negotiation",
           "ProtocolFeature", "ReplyError", "Request", "SUPPORTED_PROTOCOL_FEATURES", "SharedRegion",
           "VhostUserError", "VringConfig"]
