"""docs/plugins.md and the code cannot drift (as datasette's test_docs): every hook spec
has a heading there with exactly its argument names, and no heading names a hook that
does not exist; every DeviceType and DeviceEnv field is described."""

import dataclasses
import inspect
import re
from pathlib import Path

import pytest

from plugvm import hookspecs
from plugvm.device_manager import DeviceEnv
from plugvm.plugins import DeviceType, Registry

DOC = (Path(__file__).resolve().parents[2] / "docs" / "plugins.md").read_text()
HEADINGS = {m.group(1): [a.strip() for a in m.group(2).split(",") if a.strip()]
            for m in re.finditer(r"^### (plugvm_\w+)\(([^)]*)\)$", DOC, re.M)}
SPECS = {name: list(inspect.signature(getattr(hookspecs, name)).parameters)
         for name in Registry().hook_names()}


@pytest.mark.parametrize("hook", sorted(SPECS))
def test_every_hook_is_documented_with_its_exact_arguments(hook):
    assert hook in HEADINGS, f"docs/plugins.md has no '### {hook}(...)' heading"
    assert HEADINGS[hook] == SPECS[hook], f"{hook}: the docs say {HEADINGS[hook]}, the spec takes {SPECS[hook]}"


def test_the_docs_name_no_hook_that_does_not_exist():
    assert sorted(set(HEADINGS) - set(SPECS)) == []


def test_every_hook_spec_has_a_docstring_saying_who_calls_it():
    for name in SPECS:
        doc = inspect.getdoc(getattr(hookspecs, name)) or ""
        assert "Called" in doc, f"{name}'s docstring does not say who calls it"


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(DeviceType)])
def test_every_device_type_field_is_in_the_table(field):
    assert re.search(rf"^\| `{field}`( |,)", DOC, re.M) or f"`{field}`" in DOC, field


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(DeviceEnv)])
def test_every_device_env_field_is_described(field):
    assert re.search(rf"^- `{field}`", DOC, re.M), f"docs/plugins.md does not describe DeviceEnv.{field}"


def test_every_conformance_class_and_capability_is_in_the_docs():
    from plugvm.testing import conformance
    from plugvm.testing.conformance import capabilities

    section = DOC[DOC.index("## The conformance suite"):]
    classes = [name for name in conformance.__all__ if name.endswith(("Tests", "Conformance"))]
    assert [name for name in classes if f"| `{name}` |" not in section] == []
    assert [c for c in sorted(capabilities.ALL) if f"`{c}`" not in section] == []
