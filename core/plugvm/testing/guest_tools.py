"""Programs the test guest needs that busybox lacks, compiled static from their C source
in plugvm/testing/data by the host's gcc when the guest image is built.

vsockcat (data/vsockcat.c): an AF_VSOCK client and server, since busybox has no vsock
support and Debian's socat would bring half a dozen shared libraries along.
randread (data/randread.c): random O_DIRECT reads with several in flight (Linux AIO), for
bench/disk.py, since Debian's fio would bring a dozen.
"""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from pathlib import Path

from plugvm.testing import debian
from plugvm.testing.errors import ImageError

DATA = Path(__file__).parent / "data"
# guest path → C source
TOOLS = {"bin/vsockcat": DATA / "vsockcat.c", "bin/randread": DATA / "randread.c"}
CFLAGS = ["-static", "-O2", "-Wall", "-Werror", "-s"]


def digest() -> str:
    """What the image's manifest records, so a changed source or compiler rebuilds it."""
    h = hashlib.sha256()
    for path in TOOLS.values():
        h.update(path.read_bytes())
    h.update(subprocess.run([debian.require("gcc"), "--version"], capture_output=True, text=True).stdout.encode())
    return h.hexdigest()[:16]


def build() -> dict[str, bytes]:
    """guest path → static executable. ImageError with gcc's last line when one does not build
    (a missing libc.a means the Debian package libc6-dev)."""
    gcc = debian.require("gcc")
    out = {}
    with tempfile.TemporaryDirectory(prefix="plugvm-guest-tools-") as tmp:
        for guest_path, source in TOOLS.items():
            binary = Path(tmp) / source.stem
            proc = subprocess.run([gcc, *CFLAGS, "-o", str(binary), str(source)], capture_output=True, text=True,
                                  stdin=subprocess.DEVNULL)
            if proc.returncode != 0:
                last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
                raise ImageError(f"cannot compile {source.name} for the guest (gcc {' '.join(CFLAGS)}; "
                                 f"static linking needs libc6-dev): {last}")
            out[guest_path] = binary.read_bytes()
    return out
