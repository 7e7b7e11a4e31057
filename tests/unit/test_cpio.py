"""The newc writer: layout per the kernel's early-userspace buffer format, and determinism."""

import gzip
import stat

import pytest

from plugvm.testing.cpio import Archive


def parse_newc(raw: bytes) -> list[dict]:
    """A reader written from the format description, independent of the writer."""
    entries, pos = [], 0
    while True:
        assert raw[pos:pos + 6] == b"070701", f"bad magic at {pos}"
        fields = [int(raw[pos + 6 + 8 * i: pos + 14 + 8 * i], 16) for i in range(13)]
        ino, mode, uid, gid, nlink, mtime, size, _, _, rmaj, rmin, namesize, check = fields
        name_start = pos + 110
        name = raw[name_start:name_start + namesize - 1].decode()
        assert raw[name_start + namesize - 1] == 0
        data_start = (name_start + namesize + 3) & ~3
        data = raw[data_start:data_start + size]
        pos = (data_start + size + 3) & ~3
        entries.append(dict(name=name, ino=ino, mode=mode, uid=uid, gid=gid, nlink=nlink, mtime=mtime,
                            data=data, rdev=(rmaj, rmin), check=check))
        if name == "TRAILER!!!":
            assert pos == len(raw)
            return entries


def sample() -> Archive:
    a = Archive()
    a.directory("bin")
    a.file("bin/busybox", b"\x7fELF" + b"x" * 13, perm=0o755)
    a.symlink("bin/sh", "busybox")
    a.char_device("dev/console", 5, 1)
    a.file("init", b"#!/bin/sh\n")
    return a


def test_entries_round_trip_with_modes_devices_and_padding():
    entries = parse_newc(sample().raw())
    names = [e["name"] for e in entries]
    assert names == ["bin", "bin/busybox", "bin/sh", "dev/console", "init", "TRAILER!!!"]
    by = {e["name"]: e for e in entries}
    assert stat.S_ISDIR(by["bin"]["mode"]) and by["bin"]["nlink"] == 2
    assert by["bin/busybox"]["mode"] == stat.S_IFREG | 0o755 and by["bin/busybox"]["data"].startswith(b"\x7fELF")
    assert stat.S_ISLNK(by["bin/sh"]["mode"]) and by["bin/sh"]["data"] == b"busybox"
    assert stat.S_ISCHR(by["dev/console"]["mode"]) and by["dev/console"]["rdev"] == (5, 1)
    assert all(e["uid"] == 0 and e["gid"] == 0 and e["mtime"] == 0 for e in entries)
    assert len({e["ino"] for e in entries}) == len(entries)


def test_same_input_gives_identical_gzip_bytes():
    one, two = sample().gzipped(), sample().gzipped()
    assert one == two
    assert gzip.decompress(one) == sample().raw()
    assert one[4:8] == b"\0\0\0\0"  # gzip header mtime


def test_duplicate_names_are_refused():
    a = Archive()
    a.file("init", b"")
    with pytest.raises(ValueError, match="duplicate"):
        a.file("/init", b"")
