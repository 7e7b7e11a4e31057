"""Every option parser of the command line and the JSON config decoder, fed arbitrary text
and structures (hypothesis): only ConfigError comes out, never a traceback. And a run of
every refused command line leaves the process's fds and threads as they were."""

import os
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from plugvm import plugins
from plugvm.config import ConfigError, VmConfig, parse_cli
from plugvm.config.console import parse_console, parse_serial
from plugvm.config.cpus import CpusConfig
from plugvm.config.memory import MemoryConfig

from test_config import BAD, BAD_JSON, _body, kernel  # noqa: F401 (a fixture)

REGISTRY = plugins.load()
# Option text with the characters ch's syntax gives meaning to, among others.
TEXT = st.text(alphabet=st.sampled_from(list("=,[]@:-_\"'/. ~\x00\xffé0123456789abcdefgkmtxyzABCDEFGKMT")) |
               st.characters(), max_size=80)
PARSERS = {"--cpus": CpusConfig.parse, "--memory": MemoryConfig.parse, "--serial": parse_serial,
           "--console": parse_console,
           **{t.cli_option: t.parse for t in REGISTRY.ordered() if t.configured_by is None}}
JSON = st.recursive(st.none() | st.booleans() | st.integers(min_value=-2**70, max_value=2**70) |
                    st.floats(allow_nan=True) | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) |
                    st.dictionaries(st.text(max_size=12), inner, max_size=5), max_leaves=12)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@pytest.mark.parametrize("option", sorted(PARSERS))
@SETTINGS
@given(text=TEXT)
def test_option_parsers_raise_only_config_errors(option, text):
    try:
        PARSERS[option](text)
    except ConfigError as e:
        assert "\n" not in str(e)


# Keys every part of the VM config knows, so that the fuzzing reaches past the fields it ignores.
FIELDS = ["payload", "cpus", "memory", "serial", "console", "disks", "net", "rng", "fs", "vsock", "kernel",
          "boot_vcpus", "max_vcpus", "size", "hotplug_size", "hotplug_method", "mode", "file", "path", "tag",
          "socket", "cid", "id", "pci_device_id", "topology", "affinity", "src"]


@SETTINGS
@given(body=st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=6))
def test_the_json_decoder_raises_only_config_errors(kernel, body):
    body = {"payload": {"kernel": str(kernel)}, **body}
    try:
        VmConfig.from_json(body, REGISTRY)
    except ConfigError as e:
        assert "\n" not in str(e)


@SETTINGS
@given(part=st.sampled_from(["cpus", "memory", "serial", "console", "disks", "net", "fs", "vsock", "rng"]),
       value=st.dictionaries(st.sampled_from(FIELDS), JSON, max_size=5) | JSON)
def test_each_part_of_the_json_raises_only_config_errors(kernel, part, value):
    try:
        VmConfig.from_json({"payload": {"kernel": str(kernel)}, part: value}, REGISTRY)
    except ConfigError as e:
        assert "\n" not in str(e)


def counts():
    return len(os.listdir("/proc/self/fd")), threading.active_count()


def test_refused_inputs_leave_no_fd_or_thread_behind(kernel):
    parse_cli(["--kernel", str(kernel)], REGISTRY)         # warm up what is loaded once
    before = counts()
    for case in BAD:
        with pytest.raises(ConfigError):
            parse_cli(["--kernel", str(kernel), *case[0]], REGISTRY)
    for parts, *_ in BAD_JSON:
        with pytest.raises(ConfigError):
            VmConfig.from_json(_body(kernel, **parts), REGISTRY)
    assert counts() == before


def test_the_command_line_counts_default_and_built_in_devices_against_the_slots(kernel, tmp_path):
    image = tmp_path / "d.img"
    image.write_bytes(bytes(4096))
    disks = ["--disk", *[f"path={image},readonly=on" for _ in range(30)]]
    with pytest.raises(ConfigError, match=r"^plugvm: 32 PCI devices .* 31 slots"):
        parse_cli(["--kernel", str(kernel), *disks], REGISTRY)
    assert parse_cli(["--kernel", str(kernel), *disks, "--console", "off"], REGISTRY).vm is not None
