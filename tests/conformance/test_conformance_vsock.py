"""plugvm-vsock against the plugin conformance suite: the host side a unix socket it binds."""

import shutil
import struct
import tempfile
from pathlib import Path

import pytest

import plugvm_vsock
from plugvm.testing.conformance import DeviceConformance


class TestVsock(DeviceConformance):
    @pytest.fixture
    def plugin(self):
        return plugvm_vsock

    @pytest.fixture
    def device_type_name(self):
        return "vsock"

    @pytest.fixture
    def backend(self):
        # Not tmp_path: a unix socket's path must stay under 108 bytes.
        work = Path(tempfile.mkdtemp(prefix="plugvm-cv-"))
        yield {"socket": work / "v.sock", "socket2": work / "w.sock", "missing": work / "no" / "v.sock"}
        shutil.rmtree(work)

    @pytest.fixture
    def valid_options(self):
        return ["cid=3,socket={socket}", "cid=42,socket={socket2},id=vs0"]

    @pytest.fixture
    def invalid_options(self):
        return [("cid=2,socket={socket}", "cid=2"), ("socket={socket}", "cid is required"),
                ("cid=3,socket={socket},colour=red", "'colour'")]

    @pytest.fixture
    def invalid_json(self):
        return [({"cid": 3}, "socket"), ({"cid": "3", "socket": "/tmp/x"}, "cid")]

    @pytest.fixture
    def failing_options(self):
        return ["cid=3,socket={missing}"]

    @pytest.fixture
    def request_samples(self):
        # virtio_vsock_hdr (44 bytes): a REQUEST to port 1234 and an RW to it, from CID 3.
        def header(op, length=0):
            return struct.pack("<QQIIIHHIII", 3, 2, 5000, 1234, length, 1, op, 0, 65536, 0)
        return [header(1), header(5, 4) + b"ping", header(3)]
