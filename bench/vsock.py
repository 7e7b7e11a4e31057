"""vsock throughput and round trips host ↔ guest, plugvm against QEMU (a script, not a test).

    .venv/bin/python bench/vsock.py [--runs 3] [--mib 32]

In the lab (or directly on hardware KVM): the same Debian guest runs `vsockcat echo`
on port 5000. Under plugvm (plugvm-vsock, cloud-hypervisor's hybrid vsock) the host
reaches it through plugvm's unix socket (`CONNECT 5000`); under QEMU through
`vhost-vsock-pci` and L1's vhost_vsock module, with an AF_VSOCK socket: what a user
would pick instead. Throughput: --mib MiB sent and echoed back at once (both
directions busy), MB/s of payload; round trip: 1 byte there and back, 200 times.
Lab figures are TCG-emulated: only the ratios mean anything.
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from plugvm.testing.guest import Guest
from plugvm.testing.guest_image import GuestImage
from plugvm.testing.lab import Lab
from plugvm.testing.qemu import qemu_argv
from plugvm.testing.vmms import plugvm_argv

MiB = 1 << 20
PORT, CID = 5000, 3


def plugvm_connect(path: Path) -> socket.socket:
    deadline = time.monotonic() + 30
    while True:
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(path))
        s.sendall(f"CONNECT {PORT}\n".encode())
        line = b""
        while not line.endswith(b"\n") and (chunk := s.recv(1)):
            line += chunk
        if re.fullmatch(rb"OK \d+\n", line):
            return s
        s.close()
        if time.monotonic() > deadline:
            raise RuntimeError("the guest's echo server never answered")
        time.sleep(0.2)


def qemu_connect() -> socket.socket:
    deadline = time.monotonic() + 30
    while True:
        s = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        try:
            s.connect((CID, PORT))
            return s
        except OSError:
            s.close()
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def measure(connect, mib: int) -> tuple[float, float]:
    """(MB/s of an echoed transfer, median round trip in ms)."""
    payload = os.urandom(MiB) * mib
    s = connect()
    start = time.monotonic()
    sender = threading.Thread(target=lambda: (s.sendall(payload), s.shutdown(socket.SHUT_WR)))
    sender.start()
    received = 0
    while chunk := s.recv(1 << 20):
        received += len(chunk)
    seconds = time.monotonic() - start
    sender.join()
    s.close()
    if received != len(payload):
        raise RuntimeError(f"echoed {received} of {len(payload)} bytes")
    s = connect()
    trips = []
    for _ in range(200):
        t = time.monotonic()
        s.sendall(b"x")
        if s.recv(1) != b"x":
            raise RuntimeError("the echo went wrong")
        trips.append(time.monotonic() - t)
    s.close()
    return len(payload) / seconds / 1e6, statistics.median(trips) * 1000


def in_guest(runs: int, mib: int) -> None:
    image = GuestImage.load().quiet()
    folder = Path(tempfile.mkdtemp(prefix="plugvm-bench-vsock-"))
    path = folder / "vsock.sock"
    setups = {
        "plugvm": (plugvm_argv(image, 1, "512M", ["--vsock", f"cid={CID},socket={path}"]),
                   lambda: plugvm_connect(path)),
        "qemu": (qemu_argv(image, cpus=1, extra=("-device", f"vhost-vsock-pci,guest-cid={CID}")), qemu_connect),
    }
    results: dict[str, list[tuple[float, float]]] = {}
    for i in range(runs):
        for vmm, (argv, connect) in setups.items():
            guest = Guest(argv, image, folder / "logs", name=f"{vmm}{i}")
            try:
                guest.wait_ready(300)
                guest.console.send(f"vsockcat echo {PORT} </dev/null >/dev/null 2>&1 &\n")
                results.setdefault(vmm, []).append(measure(connect, mib))
                guest.poweroff()
            finally:
                guest.kill()
    for vmm, r in results.items():
        print(f"{vmm:7s} vsock echo {mib} MiB: median {statistics.median(x for x, _ in r):7.1f} MB/s; "
              f"round trip median {statistics.median(y for _, y in r):6.2f} ms ({runs} runs)")
    rate = statistics.median(x for x, _ in results["plugvm"]) / statistics.median(x for x, _ in results["qemu"])
    trip = statistics.median(y for _, y in results["plugvm"]) / statistics.median(y for _, y in results["qemu"])
    print(f"ratio plugvm/qemu vsock throughput: {rate:.2f} (above 1: plugvm is faster)")
    print(f"ratio plugvm/qemu vsock round trip: {trip:.2f} (below 1: plugvm is faster)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--mib", type=int, default=32)
    parser.add_argument("--in-lab", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.in_lab:
        in_guest(args.runs, args.mib)
        return 0
    return Lab(attempts=3).run([sys.executable, __file__, "--in-lab", "--runs", str(args.runs),
                                "--mib", str(args.mib)]).returncode


if __name__ == "__main__":
    sys.exit(main())
