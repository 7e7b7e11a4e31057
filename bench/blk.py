"""virtio-blk's data path in-process (a script, not a test): no guest, no KVM.

    .venv/bin/python bench/blk.py [--size-mib 256] [--seconds 3]

Requests go through the real split queue and VirtioBlk, as the device's I/O thread
would serve them, and are compared with plain os.preadv of the same sizes and
offsets on the same (page-cached) file: the physical limit of the method. Each side
is timed only while it serves (the device's queue_notify; the preadv loop), not
while the test driver lays out the next round, which is the guest's work in a VM.
Prints MB/s for 1 MiB reads and IOPS for 4 KiB random reads, the ratios, and the
spread over --runs; the device both as it runs (reads in C, blk.c) and with
PLUGVM_BLK_C=off (every request in Python).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import struct
import tempfile
import time
from pathlib import Path

from plugvm_virtio_blk import VirtioBlk
from plugvm_virtio_blk.config import DiskConfig

from plugvm.memory import GuestMemory
from plugvm.testing.virtq_driver import DriverQueue, RecordingContext

MiB = 1 << 20
BATCH = 32


def offsets(kind: str, request: int, size: int, count: int) -> list[int]:
    if kind == "seq":
        return [(i * request) % size for i in range(count)]
    rng = random.Random(1)
    return [rng.randrange(size // request) * request for _ in range(count)]


def through_plugvm(path: Path, request: int, where: list[int], seconds: float, c: bool = True) -> tuple[int, float]:
    """The device's own time for the requests; `c` False serves them all in Python (PLUGVM_BLK_C=off)."""
    memory = GuestMemory(BATCH * request + 8 * MiB)
    driver = DriverQueue(memory, 0x10000, 256, data_size=BATCH * (request + 64) + MiB)
    device = VirtioBlk(DiskConfig(path=path, image_type="Raw"))
    if c:
        os.environ.pop("PLUGVM_BLK_C", None)
    else:
        os.environ["PLUGVM_BLK_C"] = "off"
    queue = driver.device_queue()
    device.activate(memory, [queue], 0, RecordingContext())
    # The chains are laid out once; each round rewrites their headers' sectors and offers them
    # again, so that the time measured is the device's, not the test driver's.
    chains = [driver.add([struct.pack("<IIQ", 0, 0, 0)], [request, 1])[0] for _ in range(BATCH)]
    headers = [driver.desc_addr(head) for head in chains]
    device.queue_notify(0)
    driver.take_used()
    # Only the device's time counts (queue_notify: pop, walk, check, preadv, push): what the
    # test driver does between rounds is the guest's work in a real VM, not the VMM's.
    done, i, busy, start = 0, 0, 0.0, time.perf_counter()
    clock = time.perf_counter
    try:
        while clock() - start < seconds:
            for header in headers:
                memory.write(header + 8, struct.pack("<Q", where[i % len(where)] // 512))
                i += 1
            driver.resubmit(chains)
            t = clock()
            device.queue_notify(0)
            busy += clock() - t
            done += len(driver.take_used())
        return done, busy
    finally:
        device.close()
        queue.close()
        memory.close()


def through_preadv(path: Path, request: int, where: list[int], seconds: float) -> tuple[int, float]:
    fd = os.open(path, os.O_RDONLY)
    buffers = [memoryview(bytearray(request)) for _ in range(BATCH)]
    done, i, busy, start = 0, 0, 0.0, time.perf_counter()
    clock = time.perf_counter
    try:
        while clock() - start < seconds:
            batch = [where[(i + k) % len(where)] for k in range(BATCH)]
            i += BATCH
            t = clock()
            for b, offset in zip(buffers, batch):
                os.preadv(fd, [b], offset)
            busy += clock() - t
            done += BATCH
        return done, busy
    finally:
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=1.0)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="plugvm-bench-blk-"))
    path = folder / "disk.img"
    size = args.size_mib * MiB
    with open(path, "wb") as f:
        for _ in range(args.size_mib):
            f.write(os.urandom(MiB))
    print(f"virtio-blk in-process vs preadv, {args.size_mib} MiB page-cached image, {args.runs} runs of "
          f"{args.seconds:.0f} s each side, {BATCH} requests per notification")
    for label, request, kind in (("1 MiB sequential reads", MiB, "seq"), ("4 KiB random reads", 4096, "rand")):
        where = offsets(kind, request, size, 100_000)
        rates: dict[str, list[float]] = {"plugvm": [], "plugvm in Python": [], "preadv": []}
        for _ in range(args.runs):            # alternating, so that all see the same machine
            count, busy = through_plugvm(path, request, where, args.seconds)
            rates["plugvm"].append(count / busy)
            count, busy = through_plugvm(path, request, where, args.seconds, c=False)
            rates["plugvm in Python"].append(count / busy)
            count, busy = through_preadv(path, request, where, args.seconds)
            rates["preadv"].append(count / busy)
        unit, scale = ("MB/s", request / 1e6) if request >= MiB else ("IOPS", 1)
        parts = [f"{name} {statistics.median(r) * scale:,.0f} {unit} (min {min(r) * scale:,.0f}, "
                 f"max {max(r) * scale:,.0f})" for name, r in rates.items()]
        ratio = statistics.median(rates["plugvm"]) / statistics.median(rates["preadv"])
        python = statistics.median(rates["plugvm in Python"]) / statistics.median(rates["preadv"])
        print(f"  {label}: {'; '.join(parts)}; ratio {ratio:.2f} (median, {args.runs} runs; "
              f"{python:.2f} with PLUGVM_BLK_C=off)")
    os.environ.pop("PLUGVM_BLK_C", None)
    path.unlink()
    folder.rmdir()


if __name__ == "__main__":
    main()
