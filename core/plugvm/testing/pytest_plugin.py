"""plugvm's pytest plugin (entry point `plugvm` in pytest11): the `lab` marker,
batching of lab tests into one L1 boot, fixtures that boot the test guest, and the
default fixtures of the plugin conformance suite (plugvm.testing.conformance).

A test marked `lab` needs a host whose /dev/kvm runs real Linux guests. On
hardware KVM, and inside L1, it runs as usual; elsewhere all lab tests of the
session run together in L1 (see plugvm.testing.batch).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

# The conformance suite's asserts are the messages plugin authors read: rewritten, they show
# the values too. Registered before anything imports the package.
pytest.register_assert_rewrite("plugvm.testing.conformance")

from plugvm.testing import hostkvm  # noqa: E402 (after the rewrite registration)
from plugvm.testing.batch import Batch, Reporter  # noqa: E402
from plugvm.testing.guest import Guest  # noqa: E402
from plugvm.testing.guest_image import GuestImage  # noqa: E402
from plugvm.testing.vmms import LAUNCHERS  # noqa: E402

# The conformance suite's default fixtures (plugvm.testing.conformance): an author imports
# the test classes and overrides a few of them.
pytest_plugins = ["plugvm.testing.conformance.fixtures"]

BOOT_LOG_ENV = "PLUGVM_GUEST_BOOT_LOG"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("plugvm")
    group.addoption("--lab-report", metavar="PATH", help="(used inside L1) write serialized reports to PATH")
    # A ceiling on the whole batch, sized to CI's 45-minute budget (set-up and the host
    # tests take about 10 of them); a hung L1 is caught sooner, by the lab's heartbeat
    # watchdog, and a hung test by its own timeouts.
    group.addoption("--lab-timeout", type=float, default=2100.0, metavar="S",
                    help="kill the lab batch after S seconds (default 2100)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "lab: needs a real-KVM host; runs in the lab's L1 where /dev/kvm is not "
                                       "hardware, all such tests in one L1 boot")
    report = config.getoption("lab_report")
    if report:
        config.pluginmanager.register(Reporter(config, report), "plugvm-lab-reporter")
    elif hostkvm.needs_l1():
        config.pluginmanager.register(Batch(config), "plugvm-lab-batch")


@pytest.fixture(scope="session")
def guest_image() -> GuestImage:
    """The built test guest; fails (never skips) when it was not built."""
    return GuestImage.load()


def _guest_logs(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """Where a test's guests keep their console transcript and stderr. Inside L1
    that is the lab's shared folder, so that they outlive an L1 that hangs."""
    shared = os.environ.get("PLUGVM_LAB_RESULTS")
    if not shared:
        return tmp_path / "logs"
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.nodeid)
    return Path(shared) / "guests" / name


@pytest.fixture
def launch_guest(guest_image: GuestImage, tmp_path: Path, request: pytest.FixtureRequest):
    """A factory: launch_guest(vmm="qemu", cpus=1, memory="512M", extra=(), wait=True,
    boot_log=False) starts the VMM on the test guest and returns a Guest whose .console
    takes commands. The guest boots `quiet` (GuestImage.quiet) unless boot_log is true:
    a test that reads the kernel's messages runs `dmesg`, or asks for the boot log on
    the console. PLUGVM_GUEST_BOOT_LOG=1 gives every guest its whole boot log. Every guest still running at the end of the test is killed, and its
    console transcript printed (pytest shows it when the test failed)."""
    guests: list[Guest] = []

    def launch(vmm: str = "qemu", cpus: int | str = 1, memory: str = "512M", extra=(), wait: bool = True,
               boot_log: bool = False) -> Guest:
        boot_log = boot_log or os.environ.get(BOOT_LOG_ENV) == "1"
        image = guest_image if boot_log else guest_image.quiet()
        argv = LAUNCHERS[vmm](image, cpus, memory, extra)
        guest = Guest(argv, image, _guest_logs(request, tmp_path), name=f"{vmm}{len(guests)}")
        guests.append(guest)
        return guest.wait_ready() if wait else guest

    yield launch
    for guest in guests:
        guest.kill()
        print(f"--- {guest.argv[0]} console ---\n{guest.console.text[-6000:]}")
        print(f"--- {guest.argv[0]} stderr ---\n{guest.stderr()[-3000:]}")
