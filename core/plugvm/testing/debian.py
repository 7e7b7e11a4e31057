"""Debian packages as build inputs: resolve, download and unpack them, never install.

The images are built from .deb files fetched with `apt-get download` and
unpacked with `dpkg-deb -x`, so building needs no root and changes nothing on
the host; downloads are cached in the build folder by package and version.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from plugvm.testing.errors import MissingToolError, PackageError

# Which Debian package provides each program the builders call.
_TOOLS = {"apt-cache": "apt", "apt-get": "apt", "dpkg-deb": "dpkg"}


def require(program: str, package: str | None = None) -> str:
    """Return the path of a host program, or raise a one-line error naming its package."""
    path = shutil.which(program)
    if path is None:
        raise MissingToolError(program, package or _TOOLS.get(program, program))
    return path


def _run(argv: list[str], cwd: Path | None = None) -> str:
    require(argv[0])
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise PackageError(f"{' '.join(argv)} failed: {last}")
    return proc.stdout


def resolve_metapackage(meta: str) -> str:
    """The concrete package a metapackage depends on (linux-image-cloud-amd64 → linux-image-6.1.0-56-cloud-amd64).

    Kernel package names change with each ABI bump, so this is asked every build.
    """
    out = _run(["apt-cache", "depends", meta])
    m = re.search(r"^\s*Depends:\s*(linux-image-\d\S*)", out, re.MULTILINE)
    if m:
        return m.group(1)
    raise PackageError(f"apt-cache knows no kernel package behind {meta}: run apt-get update")


def candidate_version(package: str) -> str:
    """The version apt would download for package."""
    out = _run(["apt-cache", "policy", package])
    m = re.search(r"Candidate:\s*(\S+)", out)
    if not m or m.group(1) == "(none)":
        raise PackageError(f"apt-cache has no candidate for {package}: run apt-get update")
    return m.group(1)


@dataclass(frozen=True)
class Package:
    """One downloaded and unpacked Debian package."""

    name: str
    version: str
    deb: Path
    root: Path  # where its contents were unpacked


def fetch(package: str, cache: Path) -> Package:
    """Download (if not cached) and unpack (if not yet unpacked) the candidate of package."""
    version = candidate_version(package)
    cache.mkdir(parents=True, exist_ok=True)
    # apt-get download names the file name_version_arch.deb, with the epoch's ':' quoted.
    quoted = version.replace(":", "%3a")
    debs = sorted(cache.glob(f"{package}_{quoted}_*.deb"))
    if not debs:
        _run(["apt-get", "download", f"{package}={version}"], cwd=cache)
        debs = sorted(cache.glob(f"{package}_{quoted}_*.deb"))
        if not debs:
            raise PackageError(f"apt-get download {package} left no .deb in {cache}")
    deb = debs[0]
    root = cache / "unpacked" / deb.stem
    stamp = root / ".unpacked"
    if not stamp.exists():
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        _run(["dpkg-deb", "-x", str(deb), str(root)])
        stamp.touch()
    return Package(package, version, deb, root)


def kernel_release(pkg: Package) -> str:
    """The kernel release (uname -r) of an unpacked linux-image package."""
    releases = sorted(p.name for p in (pkg.root / "lib" / "modules").iterdir())
    if len(releases) != 1:
        raise PackageError(f"{pkg.name} holds {len(releases)} module trees, expected 1")
    return releases[0]
