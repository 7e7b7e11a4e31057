"""The built-in virtio-console (plugvm.builtin.console) against the plugin conformance suite:
a device the VM config's console part sets (configured_by), with a file as its host end."""

import pytest

from plugvm.builtin import console
from plugvm.config.console import ConsoleMode, VirtioConsoleConfig
from plugvm.config.memory import MemoryConfig
from plugvm.config.payload import PayloadConfig
from plugvm.config.vm import VmConfig
from plugvm.device_manager import DeviceEnv
from plugvm.serial_port import ConsoleBackend, Consoles
from plugvm.testing.conformance import DeviceConformance
from plugvm.testing.conformance import capabilities as caps


class TestConsole(DeviceConformance):
    @pytest.fixture
    def plugin(self):
        return console

    @pytest.fixture
    def device_type_name(self):
        return "console"

    @pytest.fixture
    def capabilities(self):
        return caps.DEFAULT - {caps.HOTPLUG, caps.REMOVE}

    @pytest.fixture
    def backend(self, tmp_path):
        return {"file": tmp_path / "hvc0.log", "missing": tmp_path / "no" / "such" / "dir" / "hvc0.log"}

    @pytest.fixture
    def valid_options(self):
        return ["null", "off", "file={file}", "tty"]

    @pytest.fixture
    def invalid_options(self):
        return [("loud", "loud"), ("file=", "file")]

    @pytest.fixture
    def vm_config(self, tiny_kernel, memory_config, backend):
        return VmConfig(payload=PayloadConfig(kernel=tiny_kernel), memory=memory_config,
                        console=VirtioConsoleConfig(mode=ConsoleMode.FILE, file=backend["file"]))

    @pytest.fixture
    def device_env(self, vm_config, backend):
        # The host end the VMM would open for --console file=...: the device writes there.
        ends = Consoles(serial=ConsoleBackend("null"), console=ConsoleBackend("file", backend["file"], "--console"))
        yield DeviceEnv(vm_config, consoles=ends)
        ends.close()
