"""The one way plugvm opens the host paths users give (plugvm.host_files)."""

import fcntl
import os
import threading

import pytest

from plugvm.host_files import HostFileError, open_path


def open_fds():
    return sorted(os.listdir("/proc/self/fd"))


def test_a_regular_file_opens_blocking_and_close_on_exec(tmp_path):
    path = tmp_path / "image"
    path.write_bytes(b"data")
    fd = open_path(path, "--disk", "path", write=True)
    try:
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
        assert not flags & os.O_NONBLOCK and flags & os.O_ACCMODE == os.O_RDWR
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        assert os.read(fd, 4) == b"data"
    finally:
        os.close(fd)


def test_a_character_device_only_where_the_option_takes_one():
    fd = open_path("/dev/urandom", "--rng", "src", kinds=("char", "file"))
    assert len(os.read(fd, 16)) == 16
    os.close(fd)
    with pytest.raises(HostFileError, match=r"^--disk: cannot use path='/dev/urandom': it is a character device; "
                                            r"it needs a regular file$"):
        open_path("/dev/urandom", "--disk", "path")


@pytest.mark.parametrize("write", [False, True])
def test_a_fifo_is_refused_without_waiting_for_its_other_end(tmp_path, write):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    before = open_fds()
    result = []
    thread = threading.Thread(target=lambda: result.append(pytest.raises(HostFileError, open_path, fifo, "--serial",
                                                                          "file", kinds=("file", "char"),
                                                                          write=write, append=write)))
    thread.start()
    thread.join(5)
    assert not thread.is_alive(), "open_path blocked on a FIFO"
    assert "it is a FIFO; it needs a regular file or a character device" in str(result[0].value)
    assert open_fds() == before


def test_errors_name_the_option_and_leave_nothing_open(tmp_path):
    before = open_fds()
    cases = [(tmp_path / "missing", "No such file or directory"), (tmp_path, "it is a directory"),
             ("a\0b", "the path contains a NUL byte"), ("x" * 5000, "File name too long")]
    for path, why in cases:
        with pytest.raises(HostFileError) as info:
            open_path(path, "--rng", "src")
        assert str(info.value).startswith("--rng: cannot ") and why in str(info.value) and "\n" not in str(info.value)
    assert open_fds() == before


def test_create_makes_a_missing_file_only_when_asked(tmp_path):
    with pytest.raises(HostFileError):
        open_path(tmp_path / "log", "--log-file", write=True, append=True)
    fd = open_path(tmp_path / "log", "--log-file", write=True, append=True, create=True)
    os.write(fd, b"x")
    os.close(fd)
    assert (tmp_path / "log").read_bytes() == b"x"
