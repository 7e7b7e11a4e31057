"""plugvm-remote: a ch-remote compatible client for the plugvm REST API.

It speaks HTTP/1.1 over the API unix socket and imports nothing from the
core ``plugvm`` package, so it also drives a real cloud-hypervisor.
"""

from plugvm_remote.errors import RemoteError

__all__ = ["RemoteError"]
__version__ = "0.1.0"
