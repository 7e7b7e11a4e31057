"""A guest's serial console, driven the way a person at the shell prompt would."""

from __future__ import annotations

import itertools
import os
import re
import threading
import time
from pathlib import Path
from typing import BinaryIO

from plugvm.testing.errors import ConsoleCommandError, ConsoleTimeoutError


class Console:
    """Reads everything the guest prints (from read_fd) and types into its shell (to writer).

    wait_for() consumes the console up to the end of what it found, so waiting
    twice for the same marker waits for a second occurrence.
    """

    def __init__(self, reader: BinaryIO, writer: BinaryIO | None, transcript: Path | None = None):
        self._reader = reader
        self._writer = writer
        self._text = ""          # everything read so far, '\r' removed
        self._cursor = 0         # wait_for() searches from here
        self._closed = False
        self._changed = threading.Condition()
        self._ids = itertools.count(1)
        self._transcript = open(transcript, "w") if transcript else None
        self._thread = threading.Thread(target=self._pump, name="console-reader", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        fd = self._reader.fileno()
        while True:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            text = chunk.decode("utf-8", "replace").replace("\r", "")
            if self._transcript and text:
                self._transcript.write(text)
                self._transcript.flush()
            with self._changed:
                if chunk:
                    self._text += text
                else:
                    self._closed = True
                self._changed.notify_all()
            if not chunk:
                return

    @property
    def text(self) -> str:
        """Everything the guest printed so far."""
        with self._changed:
            return self._text

    def wait_for(self, pattern: str | re.Pattern, timeout: float = 60.0) -> re.Match:
        """Wait until pattern (a regex, or a str matched literally) appears past the
        cursor; move the cursor past it and return the match."""
        regex = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                m = regex.search(self._text, self._cursor)
                if m:
                    self._cursor = m.end()
                    return m
                left = deadline - time.monotonic()
                if self._closed or left <= 0:
                    why = "the console closed" if self._closed else f"{timeout:.0f} s passed"
                    raise ConsoleTimeoutError(f"waited for {regex.pattern!r} but {why}; the console ended with:\n"
                                              + self._text[-3000:])
                self._changed.wait(min(left, 1.0))

    def send(self, text: str) -> None:
        """Type text into the guest (no newline added)."""
        if self._writer is None:
            raise ConsoleCommandError(text, -1, "this console is read-only")
        self._writer.write(text.encode())
        self._writer.flush()

    def run_status(self, cmd: str, timeout: float = 60.0) -> tuple[int, str]:
        """Run one shell command line; return its exit status and output (stdout and
        stderr as the console shows them, without the echoed command line)."""
        n = next(self._ids)
        # The markers are split by "" so that the shell's echo of this line never matches them.
        begin, end = f"@PV{n}@B", f"@PV{n}@E"
        self.send(f'echo "{begin[:3]}""{begin[3:]}"; {cmd}; echo "{end[:3]}""{end[3:]}$?"\n')
        self.wait_for(re.compile("^" + re.escape(begin) + "\n", re.MULTILINE), timeout)
        start = self._cursor
        m = self.wait_for(re.compile(re.escape(end) + r"(\d+)"), timeout)
        with self._changed:
            output = self._text[start:m.start()]
        return int(m.group(1)), output.removesuffix("\n")

    def run(self, cmd: str, timeout: float = 60.0, check: bool = True) -> str:
        """Run one shell command line and return its output; ConsoleCommandError if
        it exits non-zero and check is true."""
        status, output = self.run_status(cmd, timeout)
        if check and status != 0:
            raise ConsoleCommandError(cmd, status, output)
        return output

    def close(self) -> None:
        self._thread.join(5)
        if self._transcript:
            self._transcript.close()
