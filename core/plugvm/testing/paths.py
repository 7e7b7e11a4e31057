"""Where the lab and the images keep their build outputs."""

from __future__ import annotations

import os
from pathlib import Path


def build_dir() -> Path:
    """$PLUGVM_BUILD_DIR, or ./build: images are built on the host and read, never
    written, inside L1, whose root file system is the host's, read-only."""
    return Path(os.environ.get("PLUGVM_BUILD_DIR") or Path.cwd() / "build").absolute()
