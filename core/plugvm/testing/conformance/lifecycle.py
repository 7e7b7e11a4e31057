"""LifecycleTests: create() then close() leaves no fd, thread or file mapping behind,
and a create() that fails — because its input is bad, or because the host refuses an
fd at any point of it — releases what it had opened."""

from __future__ import annotations

import os
import resource
from contextlib import contextmanager

import pytest

from plugvm.errors import PlugvmError
from plugvm.testing.conformance.fixtures import substitute
from plugvm.testing.conformance.resources import Resources, open_fds

# Fault injection stops here: a create() that opens more fds than this is not walked further.
MAX_FD_FAULTS = 32


@contextmanager
def fd_budget(count: int):
    """Let this process open at most `count` more fds (RLIMIT_NOFILE set just above the
    lowest `count` free numbers: the kernel hands out the lowest free fd, so the next
    open after those fails with EMFILE)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    held = set(open_fds())
    limit, free = 0, 0
    while free < count or limit in held:
        if limit not in held:
            free += 1
        limit += 1
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _cycle(device_type, config, env):
    device = device_type.create(config, env)
    device.close()


class LifecycleTests:
    """What create() opens, close() releases; what a failed create() opened, it released."""

    def test_create_then_close_leaves_nothing(self, device_type, device_configs, device_env):
        assert device_configs, f"device type {device_type.name!r}: no config to create a device from"
        for config in device_configs:
            # Once first: what the first create() loads for good (modules, caches) is not a leak.
            _cycle(device_type, config, device_env)
            before = Resources.now()
            _cycle(device_type, config, device_env)
            leaks = before.leaks_settled()
            assert not leaks, (f"device {device_type.name!r}: create() then close() left "
                               f"{'; '.join(leaks)} (config {config!r})")

    def test_close_twice_is_harmless(self, device_type, device_config, device_env):
        # The core may close a device on teardown after a failed removal already did.
        device = device_type.create(device_config, device_env)
        device.close()
        try:
            device.close()
        except Exception as e:
            pytest.fail(f"device {device_type.name!r}: a second close() raised {type(e).__name__}: {e}", pytrace=False)

    def test_a_create_that_fails_on_bad_input_releases_what_it_opened(self, device_type, failing_options, backend,
                                                                     device_env):
        if not failing_options:
            pytest.skip("the `failing_options` fixture gives none")
        for text in failing_options:
            text = substitute(text, backend)
            config = device_type.parse(text)
            before = Resources.now()
            try:
                device = device_type.create(config, device_env)
            except PlugvmError:
                pass
            except Exception as e:
                pytest.fail(f"device {device_type.name!r}: create() for {text!r} raised {type(e).__name__}: {e}; "
                            f"a factory raises a plugvm.errors.PlugvmError saying why", pytrace=False)
            else:
                device.close()
                pytest.fail(f"device {device_type.name!r}: create() for {text!r} succeeded; `failing_options` "
                            f"lists inputs whose create() fails", pytrace=False)
            leaks = before.leaks_settled()
            assert not leaks, f"device {device_type.name!r}: a failed create() for {text!r} left {'; '.join(leaks)}"

    def test_a_create_refused_an_fd_at_any_point_releases_what_it_opened(self, device_type, device_config,
                                                                         device_env):
        _cycle(device_type, device_config, device_env)       # imports and caches first, with every fd it wants
        for budget in range(MAX_FD_FAULTS):
            before = Resources.now()
            device = None
            try:
                with fd_budget(budget):
                    device = device_type.create(device_config, device_env)
            except (PlugvmError, OSError) as e:
                error = e
            except Exception as e:
                pytest.fail(f"device {device_type.name!r}: create() with only {budget} fds to spare raised "
                            f"{type(e).__name__}: {e}; a host refusal should come out as a PlugvmError or OSError",
                            pytrace=False)
            if device is not None:
                device.close()
                leaks = before.leaks_settled()
                assert not leaks, (f"device {device_type.name!r}: create() then close() with {budget} fds to spare "
                                   f"left {'; '.join(leaks)}")
                return
            text = f"{type(error).__name__}: {error}"
            del error
            leaks = before.leaks_settled()
            assert not leaks, (f"device {device_type.name!r}: a create() refused its fd number {budget + 1} "
                               f"({text}) left {'; '.join(leaks)}")
        pytest.fail(f"device {device_type.name!r}: create() still failed with {MAX_FD_FAULTS} fds to spare")
