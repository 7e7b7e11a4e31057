"""The two API clients the e2e tests drive plugvm with: plugvm-remote (ch-remote's syntax)
and curl, a client nobody here wrote, whose every answer is checked against
cloud-hypervisor's OpenAPI spec."""

import subprocess
import sys
from pathlib import Path

from plugvm.testing.openapi import ResponseValidator

BIN = Path(sys.executable).parent
VALIDATOR = ResponseValidator()


def remote(socket, *args, stdin=None):
    return subprocess.run([BIN / "plugvm-remote", "--api-socket", str(socket), *args], capture_output=True,
                          text=True, timeout=120, input=stdin)


def curl(socket, method, verb, data=None, headers=()):
    """(status, body) from curl --unix-socket, validated against the OpenAPI spec."""
    out = subprocess.run(["curl", "-sS", "--unix-socket", str(socket), "-X", method,
                          *[arg for header in headers for arg in ("-H", header)],
                          "-w", "\n%{http_code} %{content_type}", f"http://localhost/api/v1/{verb}",
                          *(["--data-binary", data] if data is not None else [])],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    body, _, trailer = out.rpartition("\n")
    status, _, content_type = trailer.partition(" ")
    if int(status) != 202:          # plugvm's answer to a `Prefer: wait` that ran out; not in ch's spec
        VALIDATOR.validate(method, f"/api/v1/{verb}", int(status), body, content_type or None)
    return int(status), body
