"""Runs every `lab` test of a pytest session in one L1 boot and reports each on the host.

The host session hands the node ids of its lab tests to a pytest run inside L1.
That run writes each test report, serialized by pytest's own hooks (as
pytest-xdist does), to a file in the lab's shared folder; the host then logs
them as if its own items had run. A lab that cannot start fails every lab test
loudly with the reason: a skip would hide that nothing was tested.

When L1 hangs (see lab.py), the batch resumes in a fresh L1 with only the tests
that had not finished: a hang late in a long batch costs one test, not all of them.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from plugvm.testing.errors import LabHangError, TestingError
from plugvm.testing.lab import Lab, LabRun
from plugvm.testing.paths import build_dir

REPORTS = "pytest-reports.jsonl"
BATCH_ATTEMPTS = 8
# A test in which L1 hung this many times is reported failed and the batch goes
# on without it: a test that hangs L1 every time must not starve the others.
HANGS_PER_TEST = 3


class Reporter:
    """Inside L1: appends every report of the inner session to the shared reports file."""

    def __init__(self, config: pytest.Config, path: str):
        self.config = config
        self.file = open(os.path.expandvars(path), "a")

    def _write(self, report) -> None:
        data = self.config.hook.pytest_report_to_serializable(config=self.config, report=report)
        self.file.write(json.dumps(data) + "\n")
        self.file.flush()

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        self._write(report)

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self._write(report)


class Batch:
    """On the host: replaces the run of each lab item by the report the batch brought back."""

    def __init__(self, config: pytest.Config):
        self.config = config
        self.items: set[str] = set()
        self.order: list[str] = []
        self.reports: dict[str, list] | None = None
        self.problems: list[str] = []   # why some tests may have no report
        self.hung: dict[str, str] = {}  # nodeid → why the batch gave up on it
        self.run: LabRun | None = None
        self.lab: Lab | None = None
        self.log = build_dir() / "lab" / "batch.log"

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.order = [i.nodeid for i in session.items if i.get_closest_marker("lab")]
        self.items = set(self.order)

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem) -> bool | None:
        if item.nodeid not in self.items:
            return None
        if self.reports is None:
            self._run_batch()
        item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        for report in self.reports.get(item.nodeid) or self._missing(item):
            item.ihook.pytest_runtest_logreport(report=report)
        item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True

    def _inner_argv(self, report_path: str, nodeids: list[str]) -> list[str]:
        argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--rootdir", str(self.config.rootpath),
                "--lab-report", report_path, "-o", "addopts=", "-q", "-rfE"]
        if self.config.inipath:
            argv += ["-c", str(self.config.inipath)]
        return argv + nodeids

    def _run_batch(self) -> None:
        self.reports = {}
        self.log.parent.mkdir(parents=True, exist_ok=True)
        lab = self.lab = Lab(status=lambda msg: self._note(f"lab: {msg}"), attempts=1)
        remaining = list(self.order)
        hangs: dict[str, int] = {}
        with open(self.log, "w") as log:
            def output(line: str) -> None:
                log.write(line)
                log.flush()
            for attempt in range(1, BATCH_ATTEMPTS + 1):
                argv = self._inner_argv(f"${{PLUGVM_LAB_RESULTS}}/{REPORTS}", remaining)
                try:
                    self.run = lab.run(argv, cwd=self.config.rootpath, output=output,
                                       timeout=self.config.getoption("lab_timeout"))
                except LabHangError as e:
                    for folder in e.results:
                        self._collect(folder)   # the folder stays: its post-mortem and L1's logs
                    remaining = [n for n in remaining if not self._finished(n)]
                    # The inner run goes in order: the first unfinished test is the one L1 hung in.
                    culprit = remaining[0] if remaining else None
                    where = f" while {culprit} ran" if culprit else ""
                    self.problems.append(f"attempt {attempt}: L1 hung{where}: {e}")
                    if culprit:
                        hangs[culprit] = hangs.get(culprit, 0) + 1
                        if hangs[culprit] >= HANGS_PER_TEST:
                            self.hung[culprit] = f"L1 hung {hangs[culprit]} times while this test ran"
                            remaining.pop(0)
                    if remaining:
                        self._note(f"lab: L1 hung{where}; resuming the batch with {len(remaining)} unfinished tests")
                        continue
                    return
                except TestingError as e:
                    self.problems.append(f"the lab could not run the batch: {e}")
                    return
                self.run.attempts = attempt
                self._collect(self.run.results)
                self.problems.append(f"the batch in L1 exited {self.run.returncode}; its output is in {self.log}")
                self.run.cleanup()
                return

    def _finished(self, nodeid: str) -> bool:
        return any(r.when == "teardown" for r in self.reports.get(nodeid, []))

    def _collect(self, folder: Path) -> None:
        """Take the reports of the tests that finished in this run; drop a half-run test's."""
        try:
            lines = (folder / REPORTS).read_text().splitlines()
        except FileNotFoundError:
            return
        found: dict[str, list] = {}
        for line in lines:
            report = self.config.hook.pytest_report_from_serializable(config=self.config, data=json.loads(line))
            if isinstance(report, pytest.CollectReport):
                self.problems.append(f"collecting {report.nodeid} in L1 failed:\n{report.longreprtext}")
            else:
                found.setdefault(report.nodeid, []).append(report)
        for nodeid, reports in found.items():
            if any(r.when == "teardown" for r in reports):
                self.reports[nodeid] = reports

    def _note(self, msg: str) -> None:
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(msg)

    def _missing(self, item: pytest.Item) -> list[pytest.TestReport]:
        tail = ""
        if self.log.exists():
            tail = "\n".join(self.log.read_text(errors="replace").splitlines()[-40:])
        why = self.hung.get(item.nodeid, "no result came back from the lab for this test")
        text = "\n".join([why, *self.problems,
                          "last lines of the batch's output:", tail])
        common = dict(nodeid=item.nodeid, location=item.location, keywords={}, sections=[], duration=0.0)
        return [pytest.TestReport(outcome="passed", longrepr=None, when="setup", **common),
                pytest.TestReport(outcome="failed", longrepr=text, when="call", **common),
                pytest.TestReport(outcome="passed", longrepr=None, when="teardown", **common)]

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if self.run is None and not self.problems:
            return
        terminalreporter.section("plugvm lab")
        if self.run is not None:
            boot = f"{self.run.boot_seconds:.1f} s" if self.run.boot_seconds is not None else "n/a"
            terminalreporter.write_line(
                f"{len(self.order)} lab tests ran in one {self.run.mode} batch: L1 boot {boot}, "
                f"whole batch {self.run.seconds:.1f} s, attempts {self.run.attempts}; output: {self.log}")
            rescues = self.lab.rescues if self.lab else []
            stalls = sum(r.stuck for r in rescues)
            terminalreporter.write_line(
                f"L1 froze (QEMU TCG's lost timer interrupt) {stalls} times; rescues sent {len(rescues)}, "
                f"cleared {sum(r.cleared for r in rescues)}; L1 tick {self.lab.tick if self.lab else '?'}")
            for rescue in rescues:
                terminalreporter.write_line(f"  {rescue.describe()}")
        else:
            for problem in self.problems:
                terminalreporter.write_line(problem)
