"""The conformance suite catches broken plugins, naming the problem: each plugin here is
written to a folder with a test module subclassing the suite, and pytest is run on it in
a child process, as a plugin author would run it."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# A device of one queue of 8, configured by `broken=...` (empty options only), with a
# `FLAW` the tests replace: what a careless plugin author might write.
PLUGIN = textwrap.dedent('''
    import os
    from dataclasses import dataclass

    from plugvm.config.errors import ConfigError
    from plugvm.hookspecs import hookimpl
    from plugvm.plugins import DeviceType
    from plugvm.virtio.device import VirtioDevice

    @dataclass(frozen=True)
    class BrokenConfig:
        id: str | None = None
        pci_device_id: int | None = None

        def to_json(self):
            return {"id": self.id, "pci_device_id": self.pci_device_id}

    def parse(text):
        if text:
            raise ConfigError(f"--broken: unknown key {text!r}")
        return BrokenConfig()

    def from_json(body):
        if not isinstance(body, dict) or set(body) - {"id", "pci_device_id"}:
            raise ConfigError(f"broken: bad body {body!r}")
        return BrokenConfig(**body)

    class Broken(VirtioDevice):
        device_type = 4
        queue_sizes = (8,)

        def __init__(self, config):
            self.fd = os.open("/dev/zero", os.O_RDONLY | os.O_CLOEXEC)
            self.queue = self.memory = None

        def activate(self, memory, queues, features, context):
            self.memory, self.queue, self.context = memory, queues[0], context

        def queue_notify(self, index):
            if self.queue is not None:
                self.queue.serve(self.answer)

        def answer(self, chain):
            for view in chain.writable:
                view[:] = bytes(len(view))
            WRITE_FLAW
            return chain.writable_len

        def reset(self):
            self.queue = self.memory = None

        def close(self):
            CLOSE_FLAW

    @hookimpl
    def HOOK_NAME():
        return [DeviceType(name="broken", kind="virtio", cli_option="--broken", config_key="broken",
                           parse=parse, from_json=from_json, create=lambda config, env: Broken(config),
                           api_verb=None, id_prefix="_broken")]
''')

TESTS = textwrap.dedent('''
    import pytest
    import plugvm_broken
    from plugvm.testing.conformance import capabilities as caps
    from plugvm.testing.conformance import {classes}

    class TestBroken({classes}):
        @pytest.fixture
        def plugin(self):
            return plugvm_broken

        @pytest.fixture
        def device_type_name(self):
            return "broken"

        @pytest.fixture
        def capabilities(self):
            return caps.DEFAULT - {{caps.HOTPLUG, caps.REMOVE}}

        @pytest.fixture
        def valid_options(self):
            return [""]
''')

CORRECT = {"WRITE_FLAW": "pass", "CLOSE_FLAW": "os.close(self.fd) if self.fd >= 0 else None; self.fd = -1",
           "HOOK_NAME": "plugvm_device_types"}


def run_suite(tmp_path: Path, classes: str, **flaws) -> subprocess.CompletedProcess:
    source = PLUGIN
    for marker, code in {**CORRECT, **flaws}.items():
        source = source.replace(marker, code)
    (tmp_path / "plugvm_broken.py").write_text(source)
    (tmp_path / "test_broken_plugin.py").write_text(TESTS.format(classes=classes))
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
                           "test_broken_plugin.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_correct_plugin_passes(tmp_path):
    # The baseline: each failure below is the flaw's, not the harness's.
    result = run_suite(tmp_path, "DeviceTypeTests, LifecycleTests, VirtioDeviceTests")
    assert result.returncode == 0, result.stdout + result.stderr
    assert " passed" in result.stdout.splitlines()[-1]


def test_a_device_writing_outside_its_buffers_fails_the_hostile_queue_test(tmp_path):
    # Writes its status byte at guest address 8: inside queue 0's descriptor table.
    result = run_suite(tmp_path, "VirtioDeviceTests", WRITE_FLAW="self.memory.write(8, b'\\x01')")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED test_broken_plugin.py::TestBroken::test_a_hostile_guest_gets_at_worst_needs_reset" in result.stdout
    assert "device 'broken' wrote 1 bytes at 0x8 outside the buffers it was given" in result.stdout, result.stdout


def test_a_device_leaking_an_fd_on_close_fails_the_lifecycle_test(tmp_path):
    result = run_suite(tmp_path, "LifecycleTests", CLOSE_FLAW="self.queue = None")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED test_broken_plugin.py::TestBroken::test_create_then_close_leaves_nothing" in result.stdout
    assert "create() then close() left fd" in result.stdout and "(/dev/zero) open" in result.stdout, result.stdout


def test_a_hookimpl_typo_fails_registration_naming_the_hook(tmp_path):
    result = run_suite(tmp_path, "DeviceTypeTests", HOOK_NAME="plugvm_device_typs")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED test_broken_plugin.py::TestBroken::test_registers_beside_the_installed_plugins" in result.stdout
    assert "plugvm_device_typs" in result.stdout, result.stdout
