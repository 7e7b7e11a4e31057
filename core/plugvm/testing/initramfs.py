"""The busybox initramfs layout that the guest and L1 images share."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from plugvm.testing import debian
from plugvm.testing.cpio import Archive
from plugvm.testing.kmod import ModuleTree

_DIRS = ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "run", "mnt",
         "etc", "etc/init.d", "root", "lib", "lib/modules"]


def busybox_archive(busybox: debian.Package, tree: ModuleTree, release: str, modules: list[str]) -> Archive:
    """An archive with busybox at /bin/busybox, /dev/console and /dev/null, and the
    given modules as plain .ko files under /lib/modules/<release>/ plus a load-order file."""
    archive = Archive()
    for d in _DIRS:
        archive.directory(d)
    archive.directory(f"lib/modules/{release}")
    archive.char_device("dev/console", 5, 1)
    archive.char_device("dev/null", 1, 3, perm=0o666)
    archive.file("bin/busybox", (busybox.root / "bin" / "busybox").read_bytes(), perm=0o755)
    for name in modules:
        archive.file(f"lib/modules/{release}/{name}.ko", tree.load(name))
    archive.file(f"lib/modules/{release}/load-order", ("\n".join(modules) + "\n").encode())
    return archive


def source_digest(*modules: object) -> str:
    """A digest of the builder's own source, so a changed builder rebuilds its image."""
    h = hashlib.sha256()
    for mod in modules:
        h.update(Path(mod.__file__).read_bytes())  # type: ignore[attr-defined]
    return h.hexdigest()[:16]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Manifest:
    """What an image was built from; an image whose inputs are unchanged is current."""

    path: Path

    def read(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return None

    def is_current(self, inputs: dict, outputs: list[Path]) -> bool:
        data = self.read()
        return bool(data) and data.get("inputs") == inputs and all(p.exists() for p in outputs)

    def write(self, inputs: dict, **facts: object) -> None:
        self.path.write_text(json.dumps({"inputs": inputs, **facts}, indent=2, sort_keys=True) + "\n")
