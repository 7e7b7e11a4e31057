"""The console driver against a real shell on pipes (no guest needed for its logic)."""

import subprocess

import pytest

from plugvm.testing.console import Console
from plugvm.testing.errors import ConsoleCommandError, ConsoleTimeoutError


@pytest.fixture
def shell(tmp_path):
    proc = subprocess.Popen(["sh"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    console = Console(proc.stdout, proc.stdin, tmp_path / "transcript")
    yield console
    proc.kill()
    proc.wait()
    proc.stdin.close()
    proc.stdout.close()
    console.close()


def test_run_returns_output_and_status(shell):
    assert shell.run("echo hello; echo world") == "hello\nworld"
    assert shell.run_status("echo oops >&2; false") == (1, "oops")
    assert shell.run("printf 'no newline'") == "no newline"
    assert shell.run("true") == ""


def test_run_raises_on_failure_when_checked(shell):
    with pytest.raises(ConsoleCommandError) as err:
        shell.run("echo partial; exit_code() { return 7; }; exit_code")
    assert err.value.status == 7 and err.value.output == "partial"
    assert shell.run("echo still alive") == "still alive"


def test_wait_for_consumes_so_a_marker_can_be_awaited_twice(shell):
    shell.send("echo MARK; echo MARK\n")
    shell.wait_for("MARK", 5)
    shell.wait_for("MARK", 5)
    with pytest.raises(ConsoleTimeoutError, match="MARK"):
        shell.wait_for("MARK", 0.5)


def test_a_closed_console_fails_fast(shell):
    shell.send("exit\n")
    with pytest.raises(ConsoleTimeoutError, match="console closed"):
        shell.wait_for("never printed", 30)


def test_transcript_has_everything(shell, tmp_path):
    shell.run("echo recorded")
    assert "recorded" in (tmp_path / "transcript").read_text()
