"""The REST API on this host's KVM, with the tiny guest: cloud-hypervisor's paths,
bodies, status codes and error shape, over a real unix socket with a real HTTP client."""

import json
import re
import os
import random
import signal
import stat
import subprocess
import sys
import threading
import time

import httpx
import pytest

from plugvm.testing.openapi import ResponseValidator
from plugvm.testing.tiny_kernel import bzimage

# Every response these tests see is checked against cloud-hypervisor's OpenAPI spec.
VALIDATOR = ResponseValidator()


def validated(response):
    response.read()
    path = response.request.url.path
    if path.removeprefix("/api/v1/") in ("vm.frobnicate", "vm.add-frob", "vm.nothing"):
        # Paths the spec cannot know: the 404 still carries ch's error shape.
        assert response.status_code == 404 and all(isinstance(s, str) for s in response.json())
        return
    if response.status_code == 202:
        return      # plugvm's answer to a `Prefer: wait` that ran out: not in ch's spec, checked by its tests
    VALIDATOR.validate(response.request.method, path, response.status_code, response.content,
                       response.headers.get("content-type"))


def api_client(socket):
    return httpx.Client(transport=httpx.HTTPTransport(uds=str(socket)), base_url="http://localhost/api/v1/",
                        timeout=30, event_hooks={"response": [validated]})


@pytest.fixture
def kernel(tmp_path):
    path = tmp_path / "spin.bzImage"
    path.write_bytes(bzimage(b"tiny guest up\n", poweroff=False))
    return path


class Plugvm:
    def __init__(self, tmp_path, *args):
        self.socket = tmp_path / "api.sock"
        self.log = tmp_path / "plugvm.log"
        self.proc = subprocess.Popen([sys.executable, "-m", "plugvm.cli", "--api-socket", str(self.socket),
                                      "--log-file", str(self.log), "-v", *args],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        deadline = time.monotonic() + 30
        while not self._listening():
            assert self.proc.poll() is None, self.proc.communicate()
            assert time.monotonic() < deadline, "the API socket did not appear"
            time.sleep(0.05)
        self.client = api_client(self.socket)

    def _listening(self) -> bool:
        import socket as sockets
        with sockets.socket(sockets.AF_UNIX) as probe:
            try:
                probe.connect(str(self.socket))
                return True
            except OSError:         # not yet, or a stale socket nobody listens on
                return False

    def put(self, verb, body=None, raw=None):
        content = raw if raw is not None else (None if body is None else json.dumps(body))
        return self.client.put(verb, content=content)

    def get(self, verb):
        return self.client.get(verb)

    def close(self):
        self.client.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        # Closed now, not when the garbage collector gets to them: a later test that
        # counts this process's fds would see them go in the middle of its count.
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()


@pytest.fixture
def plugvm(tmp_path):
    p = Plugvm(tmp_path)
    yield p
    p.close()


def vm_body(kernel, tmp_path, **extra):
    return {"payload": {"kernel": str(kernel)}, "memory": {"size": 64 << 20},
            "serial": {"mode": "File", "file": str(tmp_path / "serial.log")}, **extra}


def wait_serial(tmp_path, boots):
    """Wait until the guest has printed its line `boots` times (once per boot)."""
    log = tmp_path / "serial.log"
    deadline = time.monotonic() + 30
    while not (log.exists() and log.read_text().count("tiny guest up") >= boots):
        assert time.monotonic() < deadline, f"boot {boots} printed nothing"
        time.sleep(0.05)


def errors(response):
    body = response.json()
    assert isinstance(body, list) and all(isinstance(s, str) for s in body), body
    return body


def test_lifecycle_through_the_api(plugvm, kernel, tmp_path):
    ping = plugvm.get("vmm.ping")
    assert ping.status_code == 200 and ping.json()["pid"] == plugvm.proc.pid and "version" in ping.json()
    assert plugvm.get("vm.info").status_code == 404
    assert plugvm.put("vm.boot").status_code == 404
    assert plugvm.put("vm.create", vm_body(kernel, tmp_path)).status_code == 204
    assert plugvm.put("vm.create", vm_body(kernel, tmp_path)).status_code == 500
    info = plugvm.get("vm.info").json()
    assert info["state"] == "Created" and info["config"]["payload"]["kernel"] == str(kernel)
    # Not booted: resize and add-disk rewrite the config.
    assert plugvm.put("vm.resize", {"desired_vcpus": None, "desired_ram": 128 << 20,
                                    "desired_balloon": None}).status_code == 204
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    assert plugvm.put("vm.add-disk", {"path": str(disk), "id": "data"}).status_code == 204
    info = plugvm.get("vm.info").json()
    assert info["config"]["memory"]["size"] == 128 << 20 and info["config"]["disks"][0]["id"] == "data"
    assert plugvm.put("vm.boot").status_code == 204
    wait_serial(tmp_path, 1)
    info = plugvm.get("vm.info").json()
    assert info["state"] == "Running" and info["memory_actual_size"] == 128 << 20
    tree = info["device_tree"]
    # ch's default console (Tty, the body names none) comes first, as in ch.
    assert {node: tree[f"_virtio-pci-{node}"]["pci_bdf"] for node in ("__console", "data", "__rng")} == {
        "__console": "0000:00:01.0", "data": "0000:00:02.0", "__rng": "0000:00:03.0"}
    assert info["config"]["console"] == {"mode": "Tty", "iommu": False, "pci_segment": 0}
    assert plugvm.put("vm.boot").status_code == 500                      # already booted
    assert plugvm.put("vm.pause").status_code == 204
    assert plugvm.get("vm.info").json()["state"] == "Paused"
    assert plugvm.put("vm.pause").status_code == 500
    assert plugvm.put("vm.resume").status_code == 204
    assert plugvm.put("vm.resume").status_code == 500
    counters = plugvm.get("vm.counters")
    assert counters.status_code == 200 and counters.json()["data"] == {
        "read_bytes": 0, "write_bytes": 0, "read_ops": 0, "write_ops": 0}      # the tiny guest has no driver
    assert plugvm.put("vm.reboot").status_code == 204
    wait_serial(tmp_path, 2)
    assert plugvm.get("vm.info").json()["state"] == "Running"
    assert plugvm.put("vm.shutdown").status_code == 204
    assert plugvm.get("vm.info").json()["state"] == "Shutdown"
    assert plugvm.put("vm.shutdown").status_code == 500
    assert plugvm.get("vm.counters").status_code == 500
    assert plugvm.put("vm.boot").status_code == 204                      # the config was kept
    wait_serial(tmp_path, 3)
    assert plugvm.put("vm.delete").status_code == 204
    assert plugvm.get("vm.info").status_code == 404
    assert plugvm.put("vmm.shutdown").status_code == 204
    assert plugvm.proc.wait(30) == 0
    assert not plugvm.socket.exists()


@pytest.mark.parametrize("method, verb, body, status, fragment", [
    ("GET", "vm.frobnicate", None, 404, "Unknown endpoint vm.frobnicate"),
    ("PUT", "vm.add-frob", "{}", 404, "No installed plugin provides vm.add-frob; the device verbs are: "),
    ("GET", "vm.boot", None, 400, "vm.boot takes PUT"),
    ("PUT", "vmm.ping", None, 400, "vmm.ping takes GET"),
    ("PUT", "vm.pause", "{}", 400, "vm.pause takes no body"),
    ("PUT", "vm.create", None, 400, "vm.create needs a JSON body"),
    ("PUT", "vm.create", "{not json", 400, "not valid JSON"),
    ("PUT", "vm.create", "{}", 400, "missing field 'payload'"),
    ("PUT", "vm.create", '{"payload": {"kernel": "/k"}, "cpus": {"boot_vcpus": "two"}}', 400, "boot_vcpus"),
    ("PUT", "vm.create", '{"payload": {"kernel": "/k"}, "iommu": true}', 400, "iommu=true is not supported"),
    ("PUT", "vm.resize", '{"desired_vcpus": -1}', 400, "desired_vcpus"),
    ("PUT", "vm.resize", '{"desired_ram": 1.5}', 400, "desired_ram=1.5 is not an integer"),
    ("PUT", "vm.create", "[" * 10000, 400, "more than 64 deep"),
    ("PUT", "vm.add-disk", '{"path": "/k", "path": "/k"}', 400, "duplicate field 'path'"),
    ("PUT", "vm.add-disk", '{"path": "/k", "serial": "\\ud800"}', 400, "lone surrogate"),
    ("PUT", "vm.create", '{"payload": {"kernel": "/k", "cmdline": "\\udc80"}}', 400, "lone surrogate"),
])
def test_bad_requests_get_cloud_hypervisors_status_and_an_error_array(plugvm, kernel, method, verb, body, status,
                                                                      fragment):
    body = body.replace("/k", str(kernel)) if body else body
    response = plugvm.client.request(method, verb, content=body)
    assert response.status_code == status
    assert any(fragment in line for line in errors(response)), response.text


def test_a_refused_body_changes_nothing(plugvm, kernel, tmp_path):
    assert plugvm.put("vm.create", vm_body(kernel, tmp_path)).status_code == 204
    before = plugvm.get("vm.info").json()
    for raw in (b"[" * 10000, b'\xef\xbb\xbf{}', '{"path": "/x"}'.encode("utf-16"), b'{"path": "\\ud800"}',
                b'{"path": "/a", "path": "/b"}'):
        assert plugvm.put("vm.add-disk", raw=raw).status_code == 400
    assert plugvm.get("vm.info").json() == before


def test_oversized_body_is_refused(plugvm):
    response = plugvm.put("vm.create", raw=b"[" + b"0," * (2 << 20) + b"0]")
    assert response.status_code == 400 and "larger than" in errors(response)[-1]


def _cli(*args, timeout=30):
    return subprocess.run([sys.executable, "-m", "plugvm.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def _stale_socket(path):
    import socket as sockets
    s = sockets.socket(sockets.AF_UNIX)
    s.bind(str(path))
    s.close()                 # the file stays, nobody listens: what a killed plugvm leaves


def test_the_socket_is_private_locked_and_a_stale_one_is_replaced(tmp_path, kernel):
    _stale_socket(tmp_path / "api.sock")
    first = Plugvm(tmp_path)
    try:
        assert stat.S_IMODE(os.stat(first.socket).st_mode) == 0o600
        assert first.get("vmm.ping").status_code == 200
        second = _cli("--api-socket", str(first.socket))
        assert second.returncode == 1
        assert second.stderr.strip() == (f"plugvm: error: --api-socket: cannot use '{first.socket}': "
                                         "another plugvm is serving it")
        # The loser touched nothing: the first VMM still answers on a new connection.
        assert stat.S_ISSOCK(os.stat(first.socket).st_mode)
        with api_client(first.socket) as fresh:
            assert fresh.get("vmm.ping").json()["pid"] == first.proc.pid
    finally:
        first.close()


def test_a_file_that_is_not_a_socket_is_never_replaced(tmp_path):
    path = tmp_path / "api.sock"
    path.write_text("precious")
    proc = _cli("--api-socket", str(path))
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"plugvm: error: --api-socket: '{path}' exists and is not a socket; not replacing it"
    assert path.read_text() == "precious" and sorted(os.listdir(tmp_path)) == ["api.sock"]


def test_socket_path_too_long_or_in_a_directory_nobody_may_write(tmp_path):
    long = tmp_path / ("x" * (107 - len(str(tmp_path))))       # 108 bytes with the slash
    proc = _cli("--api-socket", str(long))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "--api-socket: the path is 108 bytes; a unix socket's path has at most 107" in proc.stderr
    assert os.listdir(tmp_path) == []
    # /sys refuses new files even to root: the cause is named, not "another plugvm".
    proc = _cli("--api-socket", "/sys/plugvm-test.sock")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "cannot create the lock file '/sys/plugvm-test.sock.lock': Permission denied" in proc.stderr


@pytest.mark.parametrize("kind", ["socketpair", "datagram"])
def test_an_inherited_fd_that_cannot_serve_is_one_line(kind):
    import socket as sockets
    ends = (sockets.socketpair() if kind == "socketpair" else
            (sockets.socket(sockets.AF_UNIX, sockets.SOCK_DGRAM), None))
    fd = ends[0].fileno()
    proc = subprocess.run([sys.executable, "-m", "plugvm.cli", "--api-socket", f"fd={fd}"], pass_fds=[fd],
                          capture_output=True, text=True, timeout=30)
    for end in ends:
        if end is not None:
            end.close()
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith(f"plugvm: error: --api-socket: fd={fd} is not ")


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_shut_down_in_order(tmp_path, kernel, signum):
    p = Plugvm(tmp_path)
    try:
        assert p.put("vm.create", vm_body(kernel, tmp_path)).status_code == 204
        assert p.put("vm.boot").status_code == 204
        wait_serial(tmp_path, 1)
        p.proc.send_signal(signum)
        assert p.proc.wait(30) == 0
        assert sorted(os.listdir(tmp_path)) == ["plugvm.log", "serial.log", "spin.bzImage"]
        assert "exit requested" in p.log.read_text()
    finally:
        p.close()


def test_a_clean_exit_leaves_neither_socket_nor_lock_file(plugvm, tmp_path):
    assert plugvm.put("vmm.shutdown").status_code == 204
    assert plugvm.proc.wait(30) == 0
    assert not plugvm.socket.exists() and not (tmp_path / "api.sock.lock").exists()


def test_eight_clients_mixing_valid_and_malformed_requests(plugvm, kernel, tmp_path):
    assert plugvm.put("vm.create", vm_body(kernel, tmp_path)).status_code == 204
    assert plugvm.put("vm.boot").status_code == 204
    before = plugvm.get("vm.info").json()
    valid = [("GET", "vmm.ping", None), ("GET", "vm.info", None), ("GET", "vm.counters", None)]
    malformed = [("PUT", "vm.create", "{"), ("PUT", "vm.create", '{"payload": 3}'), ("GET", "vm.pause", None),
                 ("PUT", "vm.resize", '{"desired_ram": "lots"}'), ("PUT", "vm.add-disk", '{"path": 5}'),
                 ("PUT", "vm.nothing", None), ("PUT", "vm.shutdown", '"body"'), ("POST", "vm.info", None)]
    failures = []

    def client(seed):
        rng = random.Random(seed)
        with api_client(plugvm.socket) as c:
            for _ in range(125):
                is_valid = rng.random() < 0.5
                method, verb, body = rng.choice(valid if is_valid else malformed)
                r = c.request(method, verb, content=body)
                if (is_valid and r.status_code != 200) or (not is_valid and not 400 <= r.status_code < 500):
                    failures.append((method, verb, body, r.status_code, r.text))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert failures == []
    assert plugvm.proc.poll() is None
    assert plugvm.get("vm.info").json() == before


def test_api_on_an_inherited_listening_socket(tmp_path):
    import socket as sockets
    path = tmp_path / "inherited.sock"
    listener = sockets.socket(sockets.AF_UNIX, sockets.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(8)
    proc = subprocess.Popen([sys.executable, "-m", "plugvm.cli", "--api-socket", f"fd={listener.fileno()}"],
                            pass_fds=[listener.fileno()], stdin=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    listener.close()
    try:
        with api_client(path) as client:
            deadline = time.monotonic() + 30
            while True:
                try:
                    ping = client.get("vmm.ping")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
                    time.sleep(0.1)
            assert ping.status_code == 200 and ping.json()["pid"] == proc.pid
            assert client.put("vmm.shutdown").status_code == 204
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_ping_answers_while_200_idle_and_trickling_connections_are_held(plugvm):
    import socket as sockets
    held = []
    try:
        for i in range(200):
            s = sockets.socket(sockets.AF_UNIX)
            s.connect(str(plugvm.socket))
            if i % 2:
                s.sendall(b"GET /api/v1/vmm.ping HTTP/1.1\r\nHost: x\r\n")    # never finished
            held.append(s)
        time.sleep(0.5)
        for _ in range(3):
            with api_client(plugvm.socket) as fresh:
                start = time.monotonic()
                assert fresh.get("vmm.ping").status_code == 200
                assert time.monotonic() - start < 1.0
    finally:
        for s in held:
            s.close()


def test_a_fifo_serial_file_fails_vm_boot_at_once_and_the_api_stays(plugvm, kernel, tmp_path):
    fifo = tmp_path / "serial.fifo"
    os.mkfifo(fifo)
    body = vm_body(kernel, tmp_path)
    body["serial"]["file"] = str(fifo)
    assert plugvm.put("vm.create", body).status_code == 204
    start = time.monotonic()
    response = plugvm.put("vm.boot")
    assert response.status_code == 500 and time.monotonic() - start < 5
    assert errors(response) == ["Error from API", "The VM could not boot",
                                f"--serial: cannot use file='{fifo}': it is a FIFO; it needs a regular file or a "
                                "character device"]
    assert plugvm.get("vm.info").json()["state"] == "Created"
    assert plugvm.get("vmm.ping").status_code == 200
    assert "Traceback" not in plugvm.log.read_text()


def test_a_vm_created_after_delete_writes_its_own_serial_file(plugvm, kernel, tmp_path):
    for name in ("s1.txt", "s2.txt"):
        body = vm_body(kernel, tmp_path)
        body["serial"]["file"] = str(tmp_path / name)
        assert plugvm.put("vm.create", body).status_code == 204
        assert plugvm.put("vm.boot").status_code == 204
        deadline = time.monotonic() + 30
        while "tiny guest up" not in ((tmp_path / name).read_text() if (tmp_path / name).exists() else ""):
            assert time.monotonic() < deadline, f"{name} was never written"
            time.sleep(0.05)
        assert plugvm.put("vm.delete").status_code == 204
    assert (tmp_path / "s1.txt").read_text().count("tiny guest up") == 1


def test_a_204_keeps_the_connection_open_for_the_next_request(plugvm, kernel, tmp_path):
    # waitress closes HTTP/1.1 answers without Content-Length, 204s included; clients that
    # reuse connections (Kata's Go client) must find it open after cloud-hypervisor's 204s.
    import socket as sockets
    assert plugvm.put("vm.create", vm_body(kernel, tmp_path)).status_code == 204
    with sockets.socket(sockets.AF_UNIX) as s:
        s.connect(str(plugvm.socket))
        s.settimeout(10)
        reader = s.makefile("rb")

        def ask(request: bytes) -> tuple[bytes, dict]:
            s.sendall(request)
            status = reader.readline()
            headers = {}
            while (line := reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.decode().partition(":")
                headers[name.strip().lower()] = value.strip()
            reader.read(int(headers.get("content-length", 0)))
            return status, headers

        status, headers = ask(b"PUT /api/v1/vm.boot HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 204") and headers.get("connection") != "close", headers
        wait_serial(tmp_path, 1)
        status, headers = ask(b"PUT /api/v1/vm.pause HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 204") and "connection" not in headers
        status, headers = ask(b"GET /api/v1/vmm.ping HTTP/1.1\r\nHost: localhost\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 200")
        # A client that asks to close still gets its close.
        status, headers = ask(b"PUT /api/v1/vm.resume HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 204") and headers.get("connection") == "close"
        assert reader.read() == b""


def test_configs_that_would_only_fail_at_boot_are_refused_at_create(plugvm, kernel, tmp_path):
    image = tmp_path / "d.img"
    image.write_bytes(bytes(1 << 20))
    disk = {"path": str(image), "readonly": True}
    cases = [
        (409, {"disks": [{**disk, "id": "a"}, {**disk, "id": "a"}]}, "used twice"),
        (409, {"disks": [{**disk, "id": "a"}], "console": {"mode": "Null", "id": "a"}}, "used twice"),
        (400, {"disks": [{**disk, "pci_device_id": 3}, {**disk, "pci_device_id": 3}]}, "pci_device_id 3"),
        (400, {"disks": [disk] * 31}, "31 slots"),
        (400, {"disks": [disk] * 30}, "31 slots"),      # with the console and the default rng: 32
        (400, {"disks": [{**disk, "id": "_virtio-pci-x"}]}, "_virtio-pci-"),
    ]
    for status, extra, message in cases:
        refused = plugvm.put("vm.create", vm_body(kernel, tmp_path, **extra))
        assert refused.status_code == status, (extra, refused.text)
        assert message in errors(refused)[-1]
        assert plugvm.get("vm.info").status_code == 404          # nothing was created
    # Cold adds are held to the same rules.
    assert plugvm.put("vm.create", vm_body(kernel, tmp_path, disks=[disk] * 28)).status_code == 204
    assert plugvm.put("vm.add-disk", disk).status_code == 204       # the 31st PCI device, console and rng counted
    refused = plugvm.put("vm.add-disk", disk)
    assert refused.status_code == 400 and "31 slots" in errors(refused)[-1]
    assert plugvm.put("vm.add-disk", {**disk, "id": "__console"}).status_code == 400


def test_a_request_pipelined_after_a_204_is_answered(plugvm, kernel, tmp_path):
    import socket as sockets
    assert plugvm.put("vm.create", vm_body(kernel, tmp_path)).status_code == 204
    with sockets.socket(sockets.AF_UNIX) as s:
        s.connect(str(plugvm.socket))
        s.settimeout(10)
        s.sendall(b"PUT /api/v1/vm.boot HTTP/1.1\r\nHost: localhost\r\n\r\n"
                  b"GET /api/v1/vm.info HTTP/1.1\r\nHost: localhost\r\n\r\n")
        received = b""
        while received.count(b"HTTP/1.1 ") < 2 or not received.rstrip().endswith(b"}"):
            chunk = s.recv(65536)
            assert chunk, received
            received += chunk
    assert received.startswith(b"HTTP/1.1 204") and b"HTTP/1.1 200" in received and b'"Running"' in received


@pytest.mark.parametrize("request_bytes, status", [
    (b"GARBAGE\r\n\r\n", 400),                                                   # a malformed request line
    (b"PUT /api/v1/vm.boot HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
    (b"PUT /api/v1/vm.boot HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (b"GET /api/v1/vmm.ping HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 300_000 + b"\r\n\r\n", 431),
    (b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", None),
])
def test_errors_the_server_answers_itself_have_ch_s_shape(plugvm, request_bytes, status):
    import socket as sockets
    with sockets.socket(sockets.AF_UNIX) as s:
        s.connect(str(plugvm.socket))
        s.settimeout(10)
        s.sendall(request_bytes)
        received = b""
        while chunk := s.recv(65536):
            received += chunk
            head, _, body = received.partition(b"\r\n\r\n")
            length = next((int(line.split(b":")[1]) for line in head.split(b"\r\n")
                           if line.lower().startswith(b"content-length:")), None)
            if length is not None and len(body) >= length:
                break
    head, _, body = received.partition(b"\r\n\r\n")
    code = int(head.split()[1])
    assert code == status if status is not None else 400 <= code < 500, head
    assert b"content-type: application/json" in head.lower(), head
    messages = json.loads(body)
    assert isinstance(messages, list) and all(isinstance(m, str) for m in messages), body


def test_unknown_fields_are_ignored_with_one_warning_each_and_lacking_ones_refused(plugvm, kernel, tmp_path):
    # What Kata's client sends (serial.iommu, from v51.1's spec) and a field of no spec.
    body = vm_body(kernel, tmp_path, iommu=False, watchdog=False, platform={"num_pci_segments": 1, "tdx": False},
                   frobnicate={"x": 1})
    body["serial"]["iommu"] = False
    body["serial"]["colour"] = "red"
    refused = plugvm.put("vm.create", {**body, "pvpanic": True})
    assert refused.status_code == 400 and "pvpanic=true is not supported" in errors(refused)[-1]
    assert plugvm.put("vm.create", body).status_code == 204
    assert plugvm.put("vm.delete").status_code == 204
    assert plugvm.put("vm.create", body).status_code == 204
    info = plugvm.get("vm.info").json()
    assert info["state"] == "Created" and "frobnicate" not in info["config"]
    warned = [re.search(r"field='([^']*)'", line).group(1) for line in plugvm.log.read_text().splitlines()
              if "unknown JSON field ignored" in line and "level='warning'" in line]
    assert sorted(warned) == ["VmConfig.frobnicate", "serial.colour"]       # once each, over three creates
