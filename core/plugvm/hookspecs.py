"""The hooks a plugvm plugin implements (pluggy, project name "plugvm").

A plugin is a module named by an entry point in the `plugvm` group of its
distribution, e.g. in its pyproject.toml:

    [project.entry-points.plugvm]
    disk = "plugvm_virtio_blk"

plugvm loads every such module at start-up (plugvm.plugins.load()) and calls
its hook implementations, marked with plugvm.hookspecs.hookimpl. The core's
own built-in devices (virtio-rng) are plugins of the same kind.
"""

from __future__ import annotations

import pluggy

PROJECT = "plugvm"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def plugvm_device_types() -> list:
    """The device types this plugin provides, as a list of plugvm.plugins.DeviceType.

    Called once, by plugvm.plugins.load() at start-up, before the command line is
    parsed: each type's `cli_option` becomes a plugvm option, its `api_verb` an
    endpoint of the REST API, and its `config_key` a field of the VM config's JSON.
    Two types claiming the same name, option, verb or key stop plugvm with an error
    naming both distributions. Must not start threads or open files: building
    devices is the job of each type's `create`, called when a VM boots.
    """
