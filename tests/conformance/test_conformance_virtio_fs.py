"""plugvm-virtio-fs against the plugin conformance suite, its backend the real virtiofsd.

virtiofsd serves one connection and exits, and the suite connects many times (a create()
per check, one per fd it refuses). So a small supervisor, in a process of its own so that
its socket and threads are not the device's, holds the listening socket and starts a
virtiofsd on it (--fd) for each connection in turn."""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

import plugvm_virtio_fs
from plugvm.config.memory import MemoryConfig
from plugvm.testing.conformance import DeviceConformance
from plugvm.testing.conformance import capabilities as caps

VIRTIOFSD = Path("/usr/lib/qemu/virtiofsd")
MiB = 1 << 20

SUPERVISOR = textwrap.dedent("""
    import socket, subprocess, sys
    path, virtiofsd, source = sys.argv[1:]
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    print("listening", flush=True)
    while True:
        subprocess.run([virtiofsd, f"--fd={listener.fileno()}", "-o", f"source={source}", "-o", "cache=none"],
                       pass_fds=[listener.fileno()], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
""")


@pytest.fixture(scope="module")
def virtiofsd_socket():
    if not VIRTIOFSD.exists():
        pytest.fail(f"{VIRTIOFSD} is missing: CI installs it (qemu-system-common)")
    if os.geteuid() != 0:
        pytest.fail("virtiofsd's namespace sandbox needs root, as CI runs")
    work = Path(tempfile.mkdtemp(prefix="plugvm-cf-"))      # a unix socket's path stays under 108 bytes
    (work / "shared").mkdir()
    (work / "not-a-dir").write_bytes(b"")
    sock = work / "fs.sock"
    proc = subprocess.Popen([sys.executable, "-c", SUPERVISOR, str(sock), str(VIRTIOFSD), str(work / "shared")],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "listening"
    yield work, sock
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(10)
    proc.stdout.close()
    shutil.rmtree(work)


class TestVirtioFs(DeviceConformance):
    @pytest.fixture
    def plugin(self):
        return plugvm_virtio_fs

    @pytest.fixture
    def device_type_name(self):
        return "fs"

    @pytest.fixture
    def capabilities(self):
        # virtiofsd serves the queues itself (external_queues): no in-process queue checks.
        return caps.DEFAULT - {caps.QUEUES}

    @pytest.fixture
    def memory_config(self):
        return MemoryConfig(size=64 * MiB, shared=True)     # virtiofsd maps guest RAM

    @pytest.fixture
    def backend(self, virtiofsd_socket):
        # A connection made while the previous check's virtiofsd exits waits in the backlog.
        work, sock = virtiofsd_socket
        return {"socket": sock, "unreachable": work / "not-a-dir" / "fs.sock"}

    @pytest.fixture
    def valid_options(self):
        return ["tag=shared,socket={socket}", "tag=other,socket={socket},num_queues=1,queue_size=512,id=fs0"]

    @pytest.fixture
    def invalid_options(self):
        return [("socket={socket}", "tag is required"), ("tag=t", "socket is required"),
                ("tag=t,socket={socket},queue_size=1000", "queue_size"),
                ("tag=t,socket={socket},colour=red", "'colour'")]

    @pytest.fixture
    def invalid_json(self):
        return [({"socket": "/tmp/x"}, "tag"), ({"tag": 5, "socket": "/tmp/x"}, "tag")]

    @pytest.fixture
    def failing_options(self):
        # connect() fails at once (ENOTDIR), not after the boot's 60 s of retries.
        return ["tag=t,socket={unreachable}"]
