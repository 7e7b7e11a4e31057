"""The installed plugins' entry points, remembered between runs so that a start need not
import importlib.metadata.

importlib.metadata stays the one source of truth. But importing it, with the email
package it parses metadata with, took about 30 ms of every start, a fifth of exec to
first guest output. So what it finds is kept in a small JSON index. The index is keyed
by the modification time of every sys.path entry and of every distribution directory it
read. pip install and uninstall add and remove *.dist-info directories in those
entries, which changes their mtime, and a reinstall replaces the distribution's
directory. Any of these makes the index miss, and it is rebuilt from importlib.metadata.

The index lives in $XDG_CACHE_HOME/plugvm (default ~/.cache/plugvm). There is one file
per interpreter and environment, with a record for each of the last few sys.path[0]s. When that directory cannot be written, each start asks
importlib.metadata, as it would without an index. PLUGVM_PLUGIN_INDEX=off does the same.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import zlib

INDEX_ENV = "PLUGVM_PLUGIN_INDEX"
FORMAT = 2
RECORDS = 8


class PluginEntry:
    """One entry point of the `plugvm` group: what importlib.metadata.EntryPoint gives
    load() (name, value, load), and its distribution's name and version."""

    __slots__ = ("name", "value", "distribution", "version")

    def __init__(self, name: str, value: str, distribution: str, version: str):
        self.name, self.value, self.distribution, self.version = name, value, distribution, version

    def load(self):
        """The object the entry point names (`module` or `module:attr.attr`), as EntryPoint.load()."""
        module, _, attrs = self.value.partition(":")
        target = importlib.import_module(module.strip())
        for attr in filter(None, attrs.strip().split(".")):
            target = getattr(target, attr)
        return target

    def as_json(self) -> list[str]:
        return [self.name, self.value, self.distribution, self.version]

    def __repr__(self) -> str:
        return f"PluginEntry({self.name!r}, {self.value!r}, {self.distribution!r}, {self.version!r})"


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _state(paths: list[str]) -> list[list]:
    return [[p, _mtime(p or ".")] for p in paths]      # "" on sys.path is the working directory


def index_path() -> str | None:
    """This interpreter's and sys.path's index file, or None when the index is off."""
    if os.environ.get(INDEX_ENV, "").lower() in ("off", "0", "no"):
        return None
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    if not os.path.isabs(base):
        return None            # no usable home (expanduser left "~"): no index
    # One file per environment; sys.path[0] (the script's directory, or "" for -c) is left out of
    # the name, so that each script run does not leave a file behind: it picks a record inside.
    tag = zlib.crc32("\0".join([sys.executable, sys.version, *sys.path[1:]]).encode())
    return os.path.join(base, "plugvm", f"plugins-{tag:08x}.json")


def _from_metadata(group: str) -> tuple[list[PluginEntry], list[str]]:
    """The group's entry points by importlib.metadata, and the distribution directories they came from."""
    from importlib import metadata        # the ~30 ms this module exists to save, paid on a miss only

    found, read = [], []
    for entry_point in metadata.entry_points(group=group):
        dist = entry_point.dist
        found.append(PluginEntry(entry_point.name, entry_point.value, dist.name if dist else "",
                                 dist.version if dist else ""))
        where = getattr(dist, "_path", None)      # PathDistribution's directory; others have none
        if where is not None:
            read.append(str(where))
    return found, read


def _load(path: str) -> dict:
    """The index file's records by sys.path[0], or {} when it is absent, damaged or foreign."""
    try:
        with open(path) as f:
            index = json.load(f)
        if isinstance(index, dict) and index.get("format") == FORMAT and isinstance(index.get("records"), dict):
            return index["records"]
    except (OSError, ValueError):
        pass
    return {}


def _current(record, group: str) -> list[PluginEntry] | None:
    """The record's entries if it is for `group` and nothing it was keyed on has changed."""
    try:
        if record["group"] != group or record["sys_path"] != _state(sys.path):
            return None
        if record["dists"] != _state([p for p, _ in record["dists"]]):
            return None
        return [PluginEntry(*entry) for entry in record["entries"]]
    except (KeyError, TypeError, ValueError, AttributeError):
        return None            # from another plugvm: ask importlib.metadata


def _write(path: str, records: dict) -> None:
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        partial = f"{path}.{os.getpid()}"
        with open(partial, "w") as f:
            json.dump({"format": FORMAT, "records": records}, f)
        os.replace(partial, path)       # whole or not at all, for starts running side by side
    except OSError:
        pass                   # a read-only home: every start asks importlib.metadata


def entries(group: str) -> list[PluginEntry]:
    """The group's entry points, from the index when nothing on sys.path changed since it
    was written, otherwise from importlib.metadata (and the index is rewritten)."""
    path = index_path()
    first = sys.path[0] if sys.path else ""
    records = _load(path) if path is not None else {}
    cached = _current(records.get(first), group)
    if cached is not None:
        return cached
    # sys.path's state is taken before asking, so a change made while asking makes the next start miss.
    sys_path = _state(sys.path)
    found, dists = _from_metadata(group)
    if path is not None:
        # One record per sys.path[0] (`plugvm` and `python -m plugvm.cli` differ there), the
        # newest RECORDS kept, so that starts of both kinds do not rewrite each other's.
        records.pop(first, None)
        records[first] = {"group": group, "sys_path": sys_path, "dists": _state(sorted(set(dists))),
                          "entries": [e.as_json() for e in found]}
        _write(path, dict(list(records.items())[-RECORDS:]))
    return found
