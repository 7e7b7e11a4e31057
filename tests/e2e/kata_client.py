"""Kata Containers' "clh" driver as the lab test replays it (shared/reference/kata-clh.md):
its HTTP habits on the API socket, its timeouts, its 429 retry, its raw vm.add-net with
the tap fd in SCM_RIGHTS, and the Go types its client decodes replies into."""

from __future__ import annotations

import json
import random
import re
import socket
import time


class KataError(Exception):
    """A call Kata's client would fail: the status text (code and reason phrase) as Go's
    resp.Status gives it, or a reply it could not decode."""


def kata_json(body) -> bytes:
    """json.Encoder over map-based MarshalJSON: sorted keys, compact, a trailing newline."""
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode() + b"\n"


class Reply:
    def __init__(self, status: int, reason: str, headers: dict, body: bytes, seconds: float):
        self.status, self.reason, self.headers, self.body, self.seconds = status, reason, headers, body, seconds

    @property
    def status_text(self) -> str:
        return f"{self.status} {self.reason}"

    def json(self):
        if not self.body:
            return None                       # an empty body decodes to zero values
        kind = self.headers.get("content-type", "")
        if not re.match(r"(application|text)/(vnd\..+\+)?json", kind):
            raise KataError(f"undefined response type {kind!r}")
        return json.loads(self.body)


def read_reply(sock: socket.socket, start: float) -> Reply:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise KataError("the connection closed before a reply")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    version, status, reason = (lines[0].split(" ", 2) + [""])[:3]
    assert version == "HTTP/1.1", lines[0]
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise KataError("the connection closed inside a reply body")
        rest += chunk
    assert len(rest) == length, "bytes past the reply on a kept-alive connection"
    return Reply(int(status), reason, headers, rest, time.monotonic() - start)


class KataClient:
    """One kept-alive connection, as Go's transport keeps it, and Kata's header order."""

    def __init__(self, path):
        self.path = str(path)
        self.sock: socket.socket | None = None
        self.calls: list[tuple[str, float, float]] = []        # (verb, seconds, Kata's timeout)

    def _connection(self) -> socket.socket:
        if self.sock is None:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.connect(self.path)
        return self.sock

    def call(self, method: str, verb: str, body=None, *, timeout: float, decode: bool) -> Reply:
        """One call within Kata's `timeout`; KataError on a status >= 300 (its text) or a
        timeout, as Kata's client reports them."""
        lines = [f"{method} /api/v1/{verb} HTTP/1.1", "Host: localhost", "User-Agent: OpenAPI-Generator/1.0.0/go"]
        data = b"" if body is None else kata_json(body)
        if method == "PUT":
            lines.append(f"Content-Length: {len(data)}")          # 0 on body-less PUTs too
        if decode:
            lines.append("Accept: application/json")
        if body is not None:
            lines.append("Content-Type: application/json")
        lines.append("Accept-Encoding: gzip")
        request = ("\r\n".join(lines) + "\r\n\r\n").encode() + data
        start = time.monotonic()
        sock = self._connection()
        sock.settimeout(timeout)
        try:
            sock.sendall(request)
            reply = read_reply(sock, start)
        except socket.timeout:
            self.close()
            raise KataError(f"{verb}: context deadline exceeded ({timeout} s)") from None
        self.calls.append((verb, reply.seconds, timeout))
        if reply.headers.get("connection", "").lower() == "close":
            self.close()
        if reply.status >= 300:
            raise KataError(f"{reply.status_text}")
        return reply

    def resize_vcpus(self, desired: int) -> Reply:
        """Kata's ResizeVCPUs: retried only while the error text says Too Many Requests,
        20 ms·2ⁿ plus up to 100 ms of jitter, all inside one 1 s context."""
        deadline = time.monotonic() + 1.0
        for attempt in range(20):
            try:
                return self.call("PUT", "vm.resize", {"desired_vcpus": desired},
                                 timeout=max(deadline - time.monotonic(), 0.01), decode=False)
            except KataError as e:
                if "Too Many Requests" not in str(e) or time.monotonic() > deadline:
                    raise
                time.sleep(min(0.02 * 2 ** attempt + random.random() * 0.1, max(deadline - time.monotonic(), 0)))
        raise KataError("vm.resize: retries exhausted")

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


def add_net_raw(path, net_config: dict, fds: list[int]) -> Reply:
    """vmAddNetPutRequest: a new connection, the request as httputil.DumpRequest writes it
    (no User-Agent or Accept-Encoding), a json.Marshal body (no newline), all in one
    sendmsg carrying the tap fds. No timeout."""
    body = json.dumps(net_config, separators=(",", ":")).encode()
    request = (f"PUT /api/v1/vm.add-net HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n"
               f"Content-Length: {len(body)}\r\nContent-Type: application/json\r\n\r\n").encode() + body
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(path))
        start = time.monotonic()
        socket.send_fds(sock, [request], fds)
        sock.settimeout(120)
        return read_reply(sock, start)


# --- the Go types Kata's client decodes into: any mismatch fails the whole call -------------

def _int(value, where):
    assert isinstance(value, int) and not isinstance(value, bool), f"{where}: {value!r} is not an int"


def check_vm_info(info: dict) -> None:
    assert isinstance(info, dict) and isinstance(info["state"], str)
    cpus, memory = info["config"]["cpus"], info["config"]["memory"]
    for key in ("boot_vcpus", "max_vcpus"):
        _int(cpus[key], f"config.cpus.{key}")
    for key in ("size", "hotplug_size"):
        _int(memory[key], f"config.memory.{key}")
    if "memory_actual_size" in info:
        _int(info["memory_actual_size"], "memory_actual_size")
    for name, node in (info.get("device_tree") or {}).items():
        assert isinstance(node, dict) and isinstance(node.get("id", ""), str), name
        assert isinstance(node.get("resources", []), list), f"device_tree.{name}.resources is not an array"
        assert all(isinstance(r, dict) for r in node.get("resources", [])), f"device_tree.{name}.resources"
        assert all(isinstance(c, str) for c in node.get("children", [])), f"device_tree.{name}.children"
        if "pci_bdf" in node:
            assert isinstance(node["pci_bdf"], str), f"device_tree.{name}.pci_bdf is not a string"
        if "parent" in node:
            assert isinstance(node["parent"], str), f"device_tree.{name}.parent"


def check_pci_device_info(body: dict) -> str:
    """Kata stores the id and requires bdf = 0000:00:SS.0 (a two-hex-digit slot)."""
    assert isinstance(body, dict) and isinstance(body["id"], str)
    assert re.fullmatch(r"0000:00:[0-9a-f]{2}\.0", body["bdf"]), body
    return body["id"]


def check_ping(body) -> None:
    assert body is None or (isinstance(body, dict) and all(isinstance(body.get(k, ""), str)
                                                            for k in ("build_version", "version")))
