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


def run_over_tables(tables: dict, directory, commands: list[str]) -> dict[str, tuple[int, str]]:
    """Write each table (signature → bytes, no RSDP) to directory, disassemble each with
    iasl -d, recompile the DSDT's disassembly (re-dsdt.aml), and run acpiexec's batch
    `commands` over the tables but the XSDT (acpiexec makes its own). Returns
    {step: (rc, output)} for check_round_trip() and the caller's own checks."""
    steps = {}
    for sig, table in tables.items():
        (directory / f"{sig.lower()}.dat").write_bytes(table)
        steps[f"iasl -d {sig}"] = run(tool("iasl"), "-d", f"{sig.lower()}.dat", cwd=directory)
    steps["iasl DSDT"] = run(tool("iasl"), "-on", "-p", "re-dsdt", "dsdt.dsl", cwd=directory)
    loaded = [f"{sig.lower()}.dat" for sig in tables if sig != "XSDT"]
    steps["acpiexec"] = run(tool("acpiexec"), "-b", ";".join(commands), *loaded, cwd=directory)
    return steps


def check_round_trip(tables: dict, directory, steps: dict[str, tuple[int, str]]) -> None:
    """Assert that iasl disassembled every table and recompiled the DSDT without a
    complaint, and that the recompiled DSDT's body is the one we built."""
    for step, (rc, output) in steps.items():
        if step.startswith("iasl"):
            assert rc == 0 and not problems(output), f"{step}:\n{output}"
    assert CLEAN_COMPILE.search(steps["iasl DSDT"][1]), steps["iasl DSDT"][1]
    for sig in tables:
        dsl = (directory / f"{sig.lower()}.dsl").read_text()
        assert not problems(dsl.split("Raw Table Data")[0]), f"{sig}.dsl:\n{dsl}"
    assert (directory / "re-dsdt.aml").read_bytes()[36:] == tables["DSDT"][36:]
