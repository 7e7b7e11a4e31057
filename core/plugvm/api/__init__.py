"""The REST API: cloud-hypervisor's /api/v1, served by Falcon on a unix socket."""
