"""virtio-blk's data path in-process (a script, not a test): no guest, no KVM.

    .venv/bin/python bench/blk.py [--size-mib 256] [--seconds 3]

Requests go through the real split queue and VirtioBlk, as the device's I/O thread
would serve them, and are compared with plain os.preadv of the same sizes and
offsets on the same (page-cached) file: the physical limit of the method. Prints
MB/s for 1 MiB reads and IOPS for 4 KiB random reads, and the ratios.
"""

from __future__ import annotations

import argparse
import os
import random
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


def through_plugvm(path: Path, request: int, where: list[int], seconds: float) -> tuple[int, float]:
    memory = GuestMemory(BATCH * request + 8 * MiB)
    driver = DriverQueue(memory, 0x10000, 256, data_size=BATCH * (request + 64) + MiB)
    device = VirtioBlk(DiskConfig(path=path, image_type="Raw"))
    queue = driver.device_queue()
    device.activate(memory, [queue], 0, RecordingContext())
    # The chains are laid out once; each round rewrites their headers' sectors and offers them
    # again, so that the time measured is the device's, not the test driver's.
    chains = [driver.add([struct.pack("<IIQ", 0, 0, 0)], [request, 1])[0] for _ in range(BATCH)]
    headers = [driver.desc_addr(head) for head in chains]
    device.queue_notify(0)
    driver.take_used()
    done, i, start = 0, 0, time.perf_counter()
    try:
        while time.perf_counter() - start < seconds:
            for header in headers:
                memory.write(header + 8, struct.pack("<Q", where[i % len(where)] // 512))
                i += 1
            driver.resubmit(chains)
            device.queue_notify(0)
            done += len(driver.take_used())
        return done, time.perf_counter() - start
    finally:
        device.close()
        queue.close()
        memory.close()


def through_preadv(path: Path, request: int, where: list[int], seconds: float) -> tuple[int, float]:
    fd = os.open(path, os.O_RDONLY)
    buffers = [memoryview(bytearray(request)) for _ in range(BATCH)]
    done, i, start = 0, 0, time.perf_counter()
    try:
        while time.perf_counter() - start < seconds:
            for b in buffers:
                os.preadv(fd, [b], where[i % len(where)])
                i += 1
            done += BATCH
        return done, time.perf_counter() - start
    finally:
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="plugvm-bench-blk-"))
    path = folder / "disk.img"
    size = args.size_mib * MiB
    with open(path, "wb") as f:
        for _ in range(args.size_mib):
            f.write(os.urandom(MiB))
    print(f"virtio-blk in-process vs preadv, {args.size_mib} MiB page-cached image, {args.seconds:.0f} s each")
    for label, request, kind in (("1 MiB sequential reads", MiB, "seq"), ("4 KiB random reads", 4096, "rand")):
        where = offsets(kind, request, size, 100_000)
        p_count, p_time = through_plugvm(path, request, where, args.seconds)
        b_count, b_time = through_preadv(path, request, where, args.seconds)
        plugvm_rate, base_rate = p_count / p_time, b_count / b_time
        if request >= MiB:
            print(f"  {label}: plugvm {plugvm_rate * request / 1e6:8.0f} MB/s   preadv {base_rate * request / 1e6:8.0f} MB/s"
                  f"   ratio {plugvm_rate / base_rate:.2f}")
        else:
            print(f"  {label}: plugvm {plugvm_rate:8.0f} IOPS   preadv {base_rate:8.0f} IOPS"
                  f"   ratio {plugvm_rate / base_rate:.2f}")
    path.unlink()
    folder.rmdir()


if __name__ == "__main__":
    main()
