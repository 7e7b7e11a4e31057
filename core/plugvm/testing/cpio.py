"""A deterministic writer of gzip-compressed newc cpio archives (the initramfs format).

Written here rather than run through cpio(1) so that images build without root
(device nodes are just headers) and bit-identically: fixed mtime, uid 0,
sequential inode numbers, a gzip header without a timestamp.
"""

from __future__ import annotations

import gzip
import io
import stat

_MAGIC = b"070701"  # newc; see the kernel's Documentation/driver-api/early-userspace/buffer-format.rst


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


class Archive:
    """Entries in the order added; parent directories must be added before their children."""

    def __init__(self, mtime: int = 0):
        self.mtime = mtime
        self._out = io.BytesIO()
        self._ino = 0
        self._names: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes = b"", nlink: int = 1, rdev: tuple[int, int] = (0, 0)) -> None:
        name = name.strip("/")
        if name in self._names:
            raise ValueError(f"duplicate cpio entry {name}")
        self._names.add(name)
        self._ino += 1
        encoded = name.encode() + b"\0"
        fields = (self._ino, mode, 0, 0, nlink, self.mtime, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0)
        header = _MAGIC + b"".join(b"%08X" % f for f in fields)
        self._out.write(header + encoded + _pad4(len(header) + len(encoded)))
        self._out.write(data + _pad4(len(data)))

    def directory(self, name: str, perm: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | perm, nlink=2)

    def file(self, name: str, data: bytes, perm: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | perm, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def char_device(self, name: str, major: int, minor: int, perm: int = 0o600) -> None:
        self._entry(name, stat.S_IFCHR | perm, rdev=(major, minor))

    def raw(self) -> bytes:
        """The uncompressed archive, trailer included."""
        trailer = Archive(self.mtime)
        trailer._ino = self._ino
        trailer._entry("TRAILER!!!", 0, nlink=1)
        return self._out.getvalue() + trailer._out.getvalue()

    def gzipped(self) -> bytes:
        buf = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0, compresslevel=9) as gz:
            gz.write(self.raw())
        return buf.getvalue()
