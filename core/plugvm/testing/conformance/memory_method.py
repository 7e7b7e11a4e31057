"""MemoryMethodTests: a memory-hotplug method (plugvm_memory_hotplug_methods) registers
and validates its options, reserves a window the core can place, and in a Machine on
this host's /dev/kvm grows the guest's RAM: what it adds is mapped in a KVM slot inside
its window, the config it returns is one the next boot takes, a size it cannot give is
refused changing nothing, and the Machine, closed, leaves nothing behind.

Fixtures: `plugin`, `memory_method_name` (its `name`), and optionally
`memory_options` (the --memory text of the VM under test), `invalid_memory_options`
((text, what the ConfigError must say)) and `refused_sizes` (desired_ram values the
method must refuse, beside those every method refuses)."""

from __future__ import annotations

import re

import pytest

from plugvm.config.errors import ConfigError, Where
from plugvm.config.memory import MemoryConfig
from plugvm.memory_hotplug import MEMORY_BLOCK, MemoryHotplugMethod, ResizeRefused, Resized
from plugvm.testing.conformance import registry as conformance_registry_module
from plugvm.testing.conformance.fixtures import machine_of
from plugvm.testing.conformance.resources import Resources

MiB, GiB = 1 << 20, 1 << 30
CLI = Where("--memory")
HOLE_START, HOLE_END = 3 * GiB, 4 * GiB         # the 32-bit PCI hole below 4 GiB


def _added(machine) -> list:
    return [r for r in machine.memory.regions if not r.boot]


class MemoryMethodTests:
    """A memory-hotplug method, in the VM `memory_options` describes."""

    @pytest.fixture
    def memory_method_name(self) -> str:
        pytest.fail("conformance: override the `memory_method_name` fixture with the method's name "
                    "(the hotplug_method value)")

    @pytest.fixture
    def device_type_name(self, memory_method_name) -> str:
        return memory_method_name           # only names the device env's ranges: a method has no type

    @pytest.fixture
    def memory_options(self, memory_method_name) -> str:
        return f"size=128M,hotplug_method={memory_method_name},hotplug_size=512M"

    @pytest.fixture
    def invalid_memory_options(self) -> list[tuple[str, str]]:
        return []

    @pytest.fixture
    def refused_sizes(self) -> list[int]:
        return []

    @pytest.fixture
    def memory_config(self, memory_options) -> MemoryConfig:
        return MemoryConfig.parse(memory_options)

    @pytest.fixture
    def method(self, conformance_registry, memory_method_name, plugin_distribution) -> MemoryHotplugMethod:
        return conformance_registry_module.provided(conformance_registry.memory_methods, memory_method_name,
                                                    plugin_distribution, "memory-hotplug method",
                                                    "plugvm_memory_hotplug_methods")

    def test_is_well_formed(self, method, memory_method_name):
        name = repr(memory_method_name)
        assert isinstance(method, MemoryHotplugMethod), (
            f"memory method {name} is a {type(method).__name__}, not a plugvm.memory_hotplug.MemoryHotplugMethod")
        assert re.fullmatch(r"[a-z][a-z0-9]*(-[a-z0-9]+)*", method.name), (
            f"memory method {name}: name {method.name!r} is not lower-case words joined by '-' (its JSON spelling, "
            f"cloud-hypervisor's serde variant, is made from them)")
        assert isinstance(method.registers_size, int) and 0 <= method.registers_size <= 4096, (
            f"memory method {name}: registers_size {method.registers_size!r} is not 0..4096 (one platform page)")

    def test_validate_takes_the_config_under_test(self, method, memory_config):
        try:
            method.validate(memory_config, CLI)
        except ConfigError as e:
            pytest.fail(f"memory method {method.name!r} refuses `memory_options` {memory_config!r}: {e}",
                        pytrace=False)

    def test_invalid_memory_options_are_refused_naming_them(self, method, invalid_memory_options):
        if not invalid_memory_options:
            pytest.skip("the `invalid_memory_options` fixture gives none")
        for text, expected in invalid_memory_options:
            where = f"memory method {method.name!r}: --memory {text!r}"
            try:
                config = MemoryConfig.parse(text)
                method.validate(config, CLI)
            except ConfigError as e:
                assert expected in str(e), f"{where}: the ConfigError {str(e)!r} does not say {expected!r}"
                assert str(e).startswith("--memory"), f"{where}: the ConfigError {str(e)!r} does not name --memory"
            except Exception as e:
                pytest.fail(f"{where}: raised {type(e).__name__}: {e} (only ConfigError may come out of validate)",
                            pytrace=False)
            else:
                pytest.fail(f"{where} was accepted; it should be refused naming {expected!r}", pytrace=False)

    @pytest.mark.parametrize("boot_ram", [128 * MiB, 3 * GiB, 4 * GiB + 100 * MiB])
    def test_the_window_is_aligned_after_boot_ram_and_clear_of_the_hole(self, method, memory_config, boot_ram):
        # Boot RAM past 3 GiB continues above 4 GiB: its end is then 1 GiB further up.
        boot_end = boot_ram if boot_ram <= HOLE_START else boot_ram + (HOLE_END - HOLE_START)
        window = method.reserve(boot_end, memory_config)
        where = f"memory method {method.name!r}: reserve({boot_end:#x}) = {window}"
        assert window.start % MEMORY_BLOCK == 0, f"{where}: the start is not aligned to 128 MiB (a Linux memory block)"
        assert window.start >= boot_end, f"{where} starts inside boot RAM"
        assert window.size >= memory_config.hotplug_size, f"{where} is smaller than hotplug_size"
        assert window.end <= HOLE_START or window.start >= HOLE_END, f"{where} overlaps the 32-bit PCI hole"

    def test_grows_the_guest_in_a_machine(self, method, conformance_machine, memory_config):
        m, name = conformance_machine, repr(method.name)
        hotplug = m.memory_hotplug
        assert hotplug is not None, f"memory method {name}: attach() gave None"
        boot, step = memory_config.size, MEMORY_BLOCK
        assert m.memory_actual_size() == boot, (
            f"memory method {name}: before any resize, actual_size() is {m.memory_actual_size()}, not the boot "
            f"RAM's {boot}")
        hotplug.check_resize(boot + step)
        resized = hotplug.resize(boot + step)
        assert isinstance(resized, Resized), f"memory method {name}: resize() gave a {type(resized).__name__}"
        config = resized.config
        assert isinstance(config, MemoryConfig) and (config.hotplug_method, config.hotplug_size) == (
            memory_config.hotplug_method, memory_config.hotplug_size), (
            f"memory method {name}: resize() returned the config {config!r}, which changed the method or its size")
        try:
            method.validate(config, CLI)
        except ConfigError as e:
            pytest.fail(f"memory method {name}: the config resize() returned, which the next boot takes, is "
                        f"refused by its own validate(): {e}", pytrace=False)
        actual = m.memory_actual_size()
        assert boot <= actual <= boot + step, f"memory method {name}: after growing by {step}, actual_size() is {actual}"
        window = method.reserve(m.memory.boot_end, memory_config)
        for region in _added(m):
            assert window.start <= region.guest_addr and region.guest_addr + region.size <= window.end, (
                f"memory method {name}: RAM added at {region.guest_addr:#x}+{region.size:#x}, outside its window "
                f"{window}")
            assert region.slot >= 0, (f"memory method {name}: RAM at {region.guest_addr:#x} was not given a "
                                              f"KVM slot (add it through MemoryHotplugEnv.add_region)")
        assert sum(r.size for r in _added(m)) >= actual - boot, (
            f"memory method {name}: actual_size() counts RAM that no region added holds")

    def test_sizes_it_cannot_give_are_refused_changing_nothing(self, method, conformance_machine, memory_config,
                                                               refused_sizes):
        m, name = conformance_machine, repr(method.name)
        hotplug = m.memory_hotplug
        # Every method refuses RAM past its window (boot RAM and hotplug_size), and a size
        # that no Linux memory block or virtio-mem block adds up to.
        past = memory_config.size + method.reserve(m.memory.boot_end, memory_config).size + MEMORY_BLOCK
        for desired in [past, memory_config.size + 4096, *refused_sizes]:
            regions, actual = list(m.memory.regions), m.memory_actual_size()
            for call in (hotplug.check_resize, hotplug.resize):
                try:
                    call(desired)
                except ResizeRefused as e:
                    assert f"{desired}" in str(e) or "desired_ram" in str(e), (
                        f"memory method {name}: the refusal of desired_ram={desired} does not name the field: {e}")
                except Exception as e:
                    pytest.fail(f"memory method {name}: {call.__name__}({desired}) raised {type(e).__name__}: {e}, "
                                f"not ResizeRefused", pytrace=False)
                else:
                    pytest.fail(f"memory method {name}: {call.__name__}({desired}) was accepted", pytrace=False)
                assert (m.memory.regions, m.memory_actual_size()) == (regions, actual), (
                    f"memory method {name}: a refused {call.__name__}({desired}) changed the guest's RAM")

    def test_a_machine_that_grew_leaves_nothing_behind(self, method, conformance_registry, vm_config, memory_config):
        with machine_of(conformance_registry, vm_config):
            pass                            # once first: what the first Machine loads for good is not a leak
        before = Resources.now()
        with machine_of(conformance_registry, vm_config) as m:
            m.memory_hotplug.resize(memory_config.size + MEMORY_BLOCK)
        leaks = before.leaks_settled()
        assert not leaks, f"memory method {method.name!r}: a Machine that grew by 128 MiB, closed, left {'; '.join(leaks)}"
