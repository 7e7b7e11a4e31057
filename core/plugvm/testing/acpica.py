"""Running ACPICA's tools (Debian's acpica-tools) over generated ACPI tables, for tests:
find iasl/acpiexec, run them, and pick the lines of their output that are complaints."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

# A complaint from ACPICA. Not one: iasl's summary of a clean compile, and acpiexec's
# Resources command finding no _SRS (which no fixed-resource device of ours has).
PROBLEM = re.compile(r"error|warning|repair|mismatch|fail|AE_|invalid|incorrect|\*\*\*\*", re.I)
CLEAN_COMPILE = re.compile(r"^Compilation successful\. 0 Errors, 0 Warnings, 0 Remarks\b", re.M)
EXPECTED = re.compile(f"{CLEAN_COMPILE.pattern}|AcpiSetCurrentResources failed: AE_NOT_FOUND$")


def tool(name: str) -> str:
    """The path of iasl or acpiexec; fails the test (never skips) when it is missing."""
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: the ACPI tables are validated with ACPICA's tools "
                    f"(Debian: apt-get install acpica-tools)")
    return path


def run(*argv, cwd) -> tuple[int, str]:
    done = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)
    return done.returncode, done.stdout + done.stderr


def problems(text: str) -> list[str]:
    return [line for line in text.splitlines() if PROBLEM.search(line) and not EXPECTED.search(line)]
