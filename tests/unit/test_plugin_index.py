"""The plugin index (plugvm.plugin_index): importlib.metadata's answer kept between
starts, used only while nothing on sys.path has changed since it was written."""

import os
import sys
from importlib import metadata

import pytest

from plugvm import plugin_index
from plugvm.plugin_index import PluginEntry

GROUP = "plugvm"


@pytest.fixture
def index_home(tmp_path, monkeypatch):
    """An empty cache home and an extra sys.path directory of our own to change."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv(plugin_index.INDEX_ENV, raising=False)
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.setattr(sys, "path", [*sys.path, str(site)])
    return site


def asked(monkeypatch) -> list[int]:
    """Counts the calls that reach importlib.metadata."""
    calls = []
    real = plugin_index._from_metadata

    def counting(group):
        calls.append(1)
        return real(group)
    monkeypatch.setattr(plugin_index, "_from_metadata", counting)
    return calls


def library_view() -> set[tuple[str, str, str, str]]:
    return {(e.name, e.value, e.dist.name, e.dist.version) for e in metadata.entry_points(group=GROUP)}


def test_a_second_start_reads_the_index_and_finds_what_the_library_finds(index_home, monkeypatch):
    calls = asked(monkeypatch)
    first = plugin_index.entries(GROUP)
    second = plugin_index.entries(GROUP)
    assert len(calls) == 1
    assert os.path.exists(plugin_index.index_path())
    assert {tuple(e.as_json()) for e in first} == {tuple(e.as_json()) for e in second} == library_view()
    assert {"disk", "net", "rng"} <= {e.name for e in second}


def test_a_distribution_added_to_a_sys_path_directory_makes_it_ask_again(index_home, monkeypatch):
    calls = asked(monkeypatch)
    plugin_index.entries(GROUP)
    # What pip install does: a new *.dist-info directory, whose entry points the library then finds.
    dist = index_home / "plugvm_widget-1.2.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: plugvm-widget\nVersion: 1.2\n")
    (dist / "entry_points.txt").write_text("[plugvm]\nwidget = plugvm_widget_module\n")
    os.utime(index_home, ns=(1, 1))      # a different mtime even on a coarse-grained clock
    found = plugin_index.entries(GROUP)
    assert len(calls) == 2
    assert PluginEntry("widget", "plugvm_widget_module", "plugvm-widget", "1.2").as_json() in [
        e.as_json() for e in found]
    # And removing it (pip uninstall) is seen the same way.
    for f in dist.iterdir():
        f.unlink()
    dist.rmdir()
    os.utime(index_home, ns=(2, 2))
    assert "widget" not in {e.name for e in plugin_index.entries(GROUP)}
    assert len(calls) == 3


def test_an_entry_points_file_rewritten_in_place_makes_it_ask_again(index_home, monkeypatch):
    dist = index_home / "plugvm_widget-1.2.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: plugvm-widget\nVersion: 1.2\n")
    (dist / "entry_points.txt").write_text("[plugvm]\nwidget = plugvm_widget_module\n")
    calls = asked(monkeypatch)
    plugin_index.entries(GROUP)
    (dist / "entry_points.txt").write_text("[plugvm]\ngadget = plugvm_widget_module\n")
    os.utime(dist, ns=(3, 3))
    names = {e.name for e in plugin_index.entries(GROUP)}
    assert len(calls) == 2 and "gadget" in names and "widget" not in names


@pytest.mark.parametrize("damage", ["{not json", '{"format": 99}', '{"format": 2, "records": []}', "[]",
                                    '{"format": 2, "records": {"%s": {"group": "plugvm"}}}' % sys.path[0],
                                    '{"format": 2, "records": {"%s": {"group": "plugvm", "sys_path": 3, '
                                    '"dists": [], "entries": [[1]]}}}' % sys.path[0]])
def test_a_damaged_or_foreign_index_is_ignored_and_rewritten(index_home, monkeypatch, damage):
    calls = asked(monkeypatch)
    path = plugin_index.index_path()
    os.makedirs(os.path.dirname(path))
    with open(path, "w") as f:
        f.write(damage)
    assert {tuple(e.as_json()) for e in plugin_index.entries(GROUP)} == library_view()
    plugin_index.entries(GROUP)
    assert len(calls) == 1


def test_off_or_an_unwritable_home_asks_the_library_every_time(index_home, tmp_path, monkeypatch):
    calls = asked(monkeypatch)
    monkeypatch.setenv(plugin_index.INDEX_ENV, "off")
    assert plugin_index.index_path() is None
    plugin_index.entries(GROUP)
    plugin_index.entries(GROUP)
    assert len(calls) == 2
    monkeypatch.delenv(plugin_index.INDEX_ENV)
    blocked = tmp_path / "file"
    blocked.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocked))     # its "plugvm" cannot be made under a file
    assert {tuple(e.as_json()) for e in plugin_index.entries(GROUP)} == library_view()
    assert len(calls) == 3


def test_an_entry_loads_a_module_or_an_attribute_in_it():
    assert PluginEntry("x", "os.path", "d", "1").load() is os.path
    assert PluginEntry("x", "os:path.join", "d", "1").load() is os.path.join
    with pytest.raises(ModuleNotFoundError):
        PluginEntry("x", "plugvm_no_such_module", "d", "1").load()


def test_starts_from_two_places_keep_a_record_each(index_home, monkeypatch):
    """`plugvm` and `python -m plugvm.cli` differ in sys.path[0]: alternating between them
    asks importlib.metadata once for each, not at every start."""
    calls = asked(monkeypatch)
    here = list(sys.path)
    for first in ["/usr/bin", "", "/usr/bin", "", "/usr/bin"]:
        monkeypatch.setattr(sys, "path", [first, *here[1:]])
        assert {"disk", "net"} <= {e.name for e in plugin_index.entries(GROUP)}
    assert len(calls) == 2
