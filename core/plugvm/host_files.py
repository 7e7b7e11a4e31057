"""Opening the host paths users give (disk images, entropy sources, serial and log
files): one way, so that none of them can block the VMM or hand it the wrong kind
of file.

Every open is O_NONBLOCK, so a FIFO, or a device that would wait for a peer,
answers at once; then the file's kind is checked against what the option needs,
and only then is O_NONBLOCK dropped. A FIFO is never what an option needs: reads
and writes on it would stop a vCPU or an I/O thread whenever the other end does.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from typing import Iterable

from plugvm.errors import PlugvmError

# kind → (test on st_mode, how an error names it)
KINDS = {
    "file": (stat.S_ISREG, "a regular file"),
    "block": (stat.S_ISBLK, "a block device"),
    "char": (stat.S_ISCHR, "a character device"),
}
_OTHERS = [(stat.S_ISFIFO, "a FIFO"), (stat.S_ISDIR, "a directory"), (stat.S_ISSOCK, "a socket")]


class HostFileError(PlugvmError, OSError):
    """A path a user gave cannot be opened for what it is meant for; the message names
    the option, the path and the cause, on one line."""


def describe(mode: int) -> str:
    for test, name in [*KINDS.values(), *_OTHERS]:
        if test(mode):
            return name
    return "not a file plugvm can use"


def open_path(path: str | os.PathLike, option: str, key: str | None = None, *, kinds: Iterable[str] = ("file",),
              write: bool = False, create: bool = False, append: bool = False, extra_flags: int = 0) -> int:
    """Open path, given as `key=` of `option` (or as the option's value when key is
    None), and return the fd.

    kinds: the file kinds the option accepts ('file', 'block', 'char'). write opens
    read-write (write-only with append); create makes a missing regular file (0644).
    Raises HostFileError naming the option, the path and why, on one line, never
    blocking and never leaving an fd open."""
    kinds = tuple(kinds)
    shown = f"{key}={str(path)!r}" if key else repr(str(path))
    cannot_open, cannot_use = f"{option}: cannot open {shown}", f"{option}: cannot use {shown}"
    if "\0" in str(path):
        raise HostFileError(f"{cannot_open}: the path contains a NUL byte")
    access = (os.O_WRONLY if append else os.O_RDWR) if write else os.O_RDONLY
    flags = access | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK | extra_flags
    flags |= (os.O_CREAT if create else 0) | (os.O_APPEND if append else 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as e:
        if e.errno == errno.ENXIO:        # a FIFO with no reader, opened for writing
            raise HostFileError(f"{cannot_use}: it is a FIFO; it needs {_wanted(kinds)}") from e
        raise HostFileError(f"{cannot_open}: {e.strerror or e}") from e
    except (ValueError, UnicodeError) as e:
        raise HostFileError(f"{cannot_open}: {e}") from e
    try:
        mode = os.fstat(fd).st_mode
        if not any(KINDS[k][0](mode) for k in kinds):
            raise HostFileError(f"{cannot_use}: it is {describe(mode)}; it needs {_wanted(kinds)}")
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
    except HostFileError:
        os.close(fd)
        raise
    except OSError as e:
        os.close(fd)
        raise HostFileError(f"{cannot_open}: {e.strerror or e}") from e
    return fd


def _wanted(kinds: tuple[str, ...]) -> str:
    names = [KINDS[k][1] for k in kinds]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]

