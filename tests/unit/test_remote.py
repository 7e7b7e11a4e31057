"""plugvm-remote against a scripted fake API server on a unix socket.

The server records every request (method, path, headers, body) and answers
from a table, so each test checks both what the CLI sends and what it prints.
"""

from __future__ import annotations

import http.server
import io
import json
import socketserver
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from plugvm_remote.cli import main
from unix_servers import serve_unix

DISK_DEFAULTS = {
    "path": "/img/d.raw", "readonly": False, "direct": False, "iommu": False, "num_queues": 1,
    "queue_size": 128, "vhost_user": False, "vhost_socket": None, "id": None, "pci_segment": 0,
    "pci_device_id": None, "rate_limit_group": None, "rate_limiter_config": None, "serial": None,
    "queue_affinity": None, "backing_files": False, "sparse": True, "image_type": "Unknown",
    "lock_granularity": "ByteRange",
}


class FakeApi(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str) -> None:
        self.requests: list[dict] = []
        self.replies: dict[tuple[str, str], tuple[int, str | None]] = {}
        super().__init__(path, Handler)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def address_string(self) -> str:  # AF_UNIX peers have no host
        return "unix"

    def log_message(self, *args) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length", 0))
        body = self.rfile.read(length).decode() if length else None
        self.server.requests.append({"method": self.command, "path": self.path,
                                     "headers": dict(self.headers), "body": body})
        status, reply = self.server.replies.get((self.command, self.path), (204, None))
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if reply is not None:
            data = reply.encode()
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        else:
            self.end_headers()

    do_GET = do_PUT = _serve


@pytest.fixture
def api(tmp_path):
    server = FakeApi(str(tmp_path / "api.sock"))
    thread = threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def run(api, *argv) -> int:
    return main(["--api-socket", api.server_address, *argv])


def only_request(api) -> dict:
    assert len(api.requests) == 1
    return api.requests[0]


@pytest.mark.parametrize("command,method,path", [
    ("ping", "GET", "/api/v1/vmm.ping"),
    ("shutdown-vmm", "PUT", "/api/v1/vmm.shutdown"),
    ("info", "GET", "/api/v1/vm.info"),
    ("counters", "GET", "/api/v1/vm.counters"),
    ("boot", "PUT", "/api/v1/vm.boot"),
    ("delete", "PUT", "/api/v1/vm.delete"),
    ("shutdown", "PUT", "/api/v1/vm.shutdown"),
    ("reboot", "PUT", "/api/v1/vm.reboot"),
    ("pause", "PUT", "/api/v1/vm.pause"),
    ("resume", "PUT", "/api/v1/vm.resume"),
    ("power-button", "PUT", "/api/v1/vm.power-button"),
    ("nmi", "PUT", "/api/v1/vm.nmi"),
])
def test_simple_commands_send_no_body(api, capsys, command, method, path):
    assert run(api, command) == 0
    req = only_request(api)
    assert (req["method"], req["path"], req["body"]) == (method, path, None)
    assert req["headers"]["Host"] == "localhost"
    assert req["headers"]["Accept"] == "*/*"
    assert "Content-Length" not in req["headers"]
    assert "Content-Type" not in req["headers"]
    assert capsys.readouterr().out == ""


def test_success_prints_body_and_newline(api, capsys):
    api.replies[("GET", "/api/v1/vmm.ping")] = (200, '{"version":"v1"}')
    assert run(api, "ping") == 0
    assert capsys.readouterr().out == '{"version":"v1"}\n'


@pytest.mark.parametrize("argv,path,body", [
    (["resize", "--cpus", "4"], "vm.resize",
     {"desired_vcpus": 4, "desired_ram": None, "desired_balloon": None}),
    (["resize", "--memory", "2G", "--balloon", "512M"], "vm.resize",
     {"desired_vcpus": None, "desired_ram": 2 << 30, "desired_balloon": 512 << 20}),
    (["resize"], "vm.resize", {"desired_vcpus": None, "desired_ram": None, "desired_balloon": None}),
    (["resize-zone", "--id", "mem0", "--size", " 1024K "], "vm.resize-zone",
     {"id": "mem0", "desired_ram": 1 << 20}),
    (["resize-disk", "--disk", "disk0", "--size", "4096"], "vm.resize-disk",
     {"id": "disk0", "desired_size": 4096}),
    (["remove-device", "net1"], "vm.remove-device", {"id": "net1"}),
    (["add-fs", "tag=myfs,socket=/tmp/fs.sock,id=fs0"], "vm.add-fs",
     {"tag": "myfs", "socket": "/tmp/fs.sock", "num_queues": 1, "queue_size": 1024,
      "id": "fs0", "pci_segment": 0, "pci_device_id": None}),
    (["add-pmem", "file=/tmp/pm,size=2M,discard_writes=on"], "vm.add-pmem",
     {"file": "/tmp/pm", "size": 2 << 20, "discard_writes": True, "iommu": False,
      "id": None, "pci_segment": 0, "pci_device_id": None}),
    (["add-vsock", "cid=3,socket=/tmp/v.sock,id=vsock0"], "vm.add-vsock",
     {"cid": 3, "socket": "/tmp/v.sock", "iommu": False, "id": "vsock0",
      "pci_segment": 0, "pci_device_id": None}),
    (["add-device", "path=/sys/bus/pci/devices/0000:01:00.0/,x_exclude_mmap_bars=[0,2-3]"],
     "vm.add-device",
     {"path": "/sys/bus/pci/devices/0000:01:00.0/", "x_nv_gpudirect_clique": None,
      "x_exclude_mmap_bars": [0, 2, 3], "iommu": False, "id": None, "pci_segment": 0,
      "pci_device_id": None}),
    (["add-net", "tap=tap0,mac=12:34:56:78:9a:bc,ip=192.168.1.1,mask=255.255.255.0,"
                 "num_queues=4,offload_tso=off,id=net0,pci_segment=1"], "vm.add-net",
     {"tap": "tap0", "ip": "192.168.1.1", "mask": "255.255.255.0", "mac": "12:34:56:78:9a:bc",
      "host_mac": None, "mtu": None, "num_queues": 4, "queue_size": 256, "vhost_user": False,
      "vhost_socket": None, "vhost_mode": "Client", "rate_limiter_config": None,
      "offload_tso": False, "offload_ufo": True, "offload_csum": True, "iommu": False,
      "id": "net0", "pci_segment": 1, "pci_device_id": None}),
])
def test_commands_with_bodies(api, argv, path, body):
    assert run(api, *argv) == 0
    req = only_request(api)
    assert (req["method"], req["path"]) == ("PUT", "/api/v1/" + path)
    assert json.loads(req["body"]) == body
    assert req["headers"]["Content-Length"] == str(len(req["body"].encode()))
    assert "Content-Type" not in req["headers"]


def test_add_disk_sends_every_field_with_defaults(api):
    assert run(api, "add-disk", "path=/img/d.raw") == 0
    body = json.loads(only_request(api)["body"])
    assert body == DISK_DEFAULTS
    assert list(body) and set(body) == set(DISK_DEFAULTS)


def test_add_disk_parses_quotes_brackets_toggles_and_rate_limits(api):
    spec = ('path="/img/a,b.raw",readonly=on,direct=true,iommu=,id=disk1,serial=SN1,'
            'queue_affinity=[0@[0,2],1@[1-3]],bw_size=1000,bw_refill_time=100,image_type=qcow2,'
            'lock_granularity=full,sparse=off')
    assert run(api, "add-disk", spec) == 0
    body = json.loads(only_request(api)["body"])
    assert body["path"] == "/img/a,b.raw"
    assert (body["readonly"], body["direct"], body["iommu"], body["sparse"]) == (True, True, False, False)
    assert body["queue_affinity"] == [{"queue_index": 0, "host_cpus": [0, 2]},
                                      {"queue_index": 1, "host_cpus": [1, 2, 3]}]
    assert body["rate_limiter_config"] == {
        "bandwidth": {"size": 1000, "one_time_burst": 0, "refill_time": 100}, "ops": None}
    assert (body["image_type"], body["lock_granularity"], body["id"]) == ("Qcow2", "Full", "disk1")


def test_add_disk_unknown_key_fails_before_any_request(api, capsys):
    assert run(api, "add-disk", "path=/img/d.raw,bogus=1") == 1
    assert api.requests == []
    assert capsys.readouterr().err == (
        "Error: plugvm-remote exited with the following chain of errors:\n"
        "  0: Error parsing disk syntax\n"
        "  1: Error parsing --disk\n"
        "  2: Unknown option: bogus\n")


def test_bad_size_fails_before_any_request(api, capsys):
    assert run(api, "resize", "--memory", "2g") == 1
    assert api.requests == []
    err = capsys.readouterr().err
    assert "  0: Error parsing memory size\n  1: Invalid value: 2g\n" in err


def test_add_fs_requires_tag(api, capsys):
    assert run(api, "add-fs", "socket=/tmp/s") == 1
    assert api.requests == []
    assert "Error parsing --fs: tag missing" in capsys.readouterr().err


def test_create_from_file(api, tmp_path):
    config = '{"payload": {"kernel": "/boot/vmlinuz"}, "cpus": {"boot_vcpus": 1}}\n'
    (tmp_path / "vm.json").write_text(config)
    assert run(api, "create", str(tmp_path / "vm.json")) == 0
    req = only_request(api)
    assert (req["method"], req["path"], req["body"]) == ("PUT", "/api/v1/vm.create", config)


@pytest.mark.parametrize("argv", [["create"], ["create", "-"]])
def test_create_from_stdin(api, monkeypatch, argv):
    config = '{"payload":{"kernel":"/k"}}'
    monkeypatch.setattr(sys, "stdin", io.StringIO(config))
    assert run(api, *argv) == 0
    assert only_request(api)["body"] == config


def test_create_missing_file(api, tmp_path, capsys):
    assert run(api, "create", str(tmp_path / "nope.json")) == 1
    assert capsys.readouterr().err.splitlines()[1:] == [
        "  0: Error reading from file", "  1: No such file or directory (os error 2)"]


@pytest.mark.parametrize("status,name", [
    (400, "BadRequest"), (404, "NotFound"), (500, "InternalServerError"),
    (429, "TooManyRequests"), (409, "Unknown"),
])
def test_error_chain(api, capsys, status, name):
    api.replies[("PUT", "/api/v1/vm.pause")] = (status, '["Error from API","VM is not running"]')
    assert run(api, "pause") == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err == (
        "Error: plugvm-remote exited with the following chain of errors:\n"
        "  0: http client error\n"
        f"  1: Server responded with {name}\n"
        "  2: Error from API\n"
        "  3: VM is not running\n")


def test_error_body_not_json(api, capsys):
    api.replies[("PUT", "/api/v1/vm.boot")] = (500, "oops")
    assert run(api, "boot") == 1
    err = capsys.readouterr().err.splitlines()
    assert err[1] == "  0: http client error"
    assert err[2].startswith("  X: Can't get remote's error messages from JSON response: ")
    assert err[2].endswith("body='oops'")


def test_connection_failure(tmp_path, capsys):
    assert main(["--api-socket", str(tmp_path / "absent.sock"), "ping"]) == 1
    assert capsys.readouterr().err == "Error opening HTTP socket: No such file or directory (os error 2)\n"


def test_argument_errors_exit_2(api):
    with pytest.raises(SystemExit) as exc:
        run(api, "resize-disk", "--disk", "d0")
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        run(api, "no-such-command")
    assert exc.value.code == 2
    assert api.requests == []


def test_console_script(api):
    script = Path(sys.executable).parent / "plugvm-remote"
    if not script.exists():
        pytest.skip("plugvm-remote is not installed in this environment (pip install -e remote)")
    api.replies[("GET", "/api/v1/vm.info")] = (200, '{"state":"Running"}')
    done = subprocess.run([str(script), "--api-socket", api.server_address, "info"],
                          capture_output=True, text=True, timeout=30)
    assert (done.returncode, done.stdout, done.stderr) == (0, '{"state":"Running"}\n', "")
    assert only_request(api)["path"] == "/api/v1/vm.info"


def _hostile_server(path: Path, answer: bytes | None):
    """A unix socket that accepts, reads the request, then sends answer (None: nothing,
    the connection held open)."""
    held = []

    def handle(conn):
        conn.recv(65536)
        if answer is not None:
            conn.sendall(answer)
        held.append(conn)
    return serve_unix(path, handle), held


@pytest.mark.parametrize("answer", [None, b"HTTP/1.1 100 Continue\r\n\r\n"])
def test_a_server_that_never_answers_times_out(tmp_path, capsys, answer):
    import time
    server, held = _hostile_server(tmp_path / "mute.sock", answer)
    try:
        start = time.monotonic()
        assert main(["--api-socket", str(tmp_path / "mute.sock"), "--timeout", "1", "ping"]) == 1
        assert time.monotonic() - start < 5
        err = capsys.readouterr().err
        assert "Error writing to or reading from HTTP socket" in err and "timed out" in err
    finally:
        server.close()
        for conn in held:
            conn.close()


@pytest.mark.parametrize("status", [200, 500])
def test_a_hostile_servers_escape_sequences_never_reach_the_terminal(tmp_path, capsys, status):
    body = b'["\x1b]0;pwned\x07\x1b[31mred"]'
    server, held = _hostile_server(tmp_path / "evil.sock", b"HTTP/1.1 %d X\r\nContent-Length: %d\r\n\r\n%s"
                                   % (status, len(body), body))
    try:
        main(["--api-socket", str(tmp_path / "evil.sock"), "ping"])
        out = capsys.readouterr()
        assert "\x1b" not in out.out + out.err and "\x07" not in out.out + out.err
        assert "\\x1b]0;pwned\\x07\\x1b[31mred" in out.out + out.err
    finally:
        server.close()
        for conn in held:
            conn.close()


def test_create_from_a_file_that_is_not_utf8_is_an_error_chain(api, tmp_path, capsys):
    (tmp_path / "vm.json").write_bytes(b'\xff\xfe{"payload": 1}')
    assert run(api, "create", str(tmp_path / "vm.json")) == 1
    assert capsys.readouterr().err.splitlines()[1:] == [
        "  0: Error reading from file", "  1: stream did not contain valid UTF-8 (byte 0)"]


@pytest.mark.parametrize("command, config", [("add-net", "fd=[2147483648]"), ("add-net", "fd=[0-100000000]"),
                                             ("add-disk", "path=/d,queue_affinity=[0@[0-100000000]]")])
def test_huge_or_impossible_fd_and_cpu_lists_fail_fast(api, capsys, command, config):
    import time
    start = time.monotonic()
    assert run(api, command, config) == 1
    assert time.monotonic() - start < 2
    err = capsys.readouterr().err
    assert err.startswith("Error: plugvm-remote exited with the following chain of errors:\n  0: Error parsing ")
    assert api.requests == []


def test_wait_sends_prefer_wait_on_hotplug_verbs_only(api, capsys):
    api.replies[("PUT", "/api/v1/vm.add-disk")] = (200, '{"id":"_disk0","bdf":"0000:00:02.0"}')
    assert run(api, "--wait", "10", "add-disk", "path=/img/d.raw") == 0
    assert api.requests[-1]["headers"]["Prefer"] == "wait=10"
    assert capsys.readouterr().out == '{"id":"_disk0","bdf":"0000:00:02.0"}\n'
    assert run(api, "--wait", "10", "remove-device", "_disk0") == 0
    assert api.requests[-1]["headers"]["Prefer"] == "wait=10"
    assert run(api, "--wait", "10", "info") == 0
    assert "Prefer" not in api.requests[-1]["headers"]
    assert run(api, "add-disk", "path=/img/d.raw") == 0
    assert "Prefer" not in api.requests[-1]["headers"]          # without --wait: exactly ch-remote


def test_a_wait_that_runs_out_exits_1_saying_what_is_pending(api, capsys):
    api.replies[("PUT", "/api/v1/vm.remove-device")] = (202, '{"id":"_disk0","pending_removal":true}')
    assert run(api, "--wait", "3", "remove-device", "_disk0") == 1
    err = capsys.readouterr().err
    assert "has not ejected the device within 3 s" in err and "pending_removal" in err
    assert run(api, "--wait", "1.5", "remove-device", "_disk0") == 1
    assert "whole number" in capsys.readouterr().err
