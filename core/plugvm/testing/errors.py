"""Errors of the test lab and the guest image builders."""

from plugvm.errors import PlugvmError


class TestingError(PlugvmError):
    """Root of the errors raised by plugvm.testing."""

    __test__ = False  # a class named Test* is not a test case


class MissingToolError(TestingError, FileNotFoundError):
    """A host program is missing; the message names the Debian package that has it."""

    def __init__(self, program: str, package: str):
        super().__init__(f"{program} not found: install the Debian package {package} "
                         f"(apt-get install {package})")
        self.program = program
        self.package = package


class PackageError(TestingError, LookupError):
    """A Debian package could not be resolved, downloaded or unpacked."""


class ImageError(TestingError, ValueError):
    """A guest or L1 image could not be built or is missing."""


class LabError(TestingError, RuntimeError):
    """The lab's L1 could not run the command (not the command's own failure)."""


class LabHangError(LabError):
    """L1 hung on every attempt and was killed by the watchdog; `results` holds each
    attempt's shared folder, with whatever the command wrote before the hang."""

    def __init__(self, message: str, results: list | None = None):
        super().__init__(message)
        self.results = results or []


class LabTimeoutError(LabError, TimeoutError):
    """The command did not finish within the lab's overall time limit."""


class ConsoleTimeoutError(TestingError, TimeoutError):
    """What a test waited for on a guest console did not come in time."""


class ConsoleCommandError(TestingError, RuntimeError):
    """A command run on the guest console exited with a non-zero status."""

    def __init__(self, cmd: str, status: int, output: str):
        super().__init__(f"guest command {cmd!r} exited {status}: {output[-2000:]}")
        self.cmd = cmd
        self.status = status
        self.output = output


class GuestExitedError(TestingError, RuntimeError):
    """The VMM process running the guest ended while a test still used it."""
