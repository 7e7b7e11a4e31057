"""What kind of /dev/kvm this host has, and so whether real guests need the lab's L1."""

from __future__ import annotations

import os
from pathlib import Path

IN_LAB_ENV = "PLUGVM_IN_LAB"   # set for commands that the lab runs
MODE_ENV = "PLUGVM_LAB_MODE"   # l1 or direct: overrides the detection


def kvm_kind() -> str:
    """'hardware' (VMX/SVM), 'pvm' (the PVM module: only its emulator runs ordinary
    guests) or 'none' (no /dev/kvm)."""
    if not Path("/dev/kvm").exists():
        return "none"
    if Path("/sys/module/kvm_pvm").exists():
        return "pvm"
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        return "none"
    return "hardware" if {"vmx", "svm"} & set(flags.split()) else "none"


def needs_l1() -> bool:
    """True when a real Linux guest can only run inside the lab's L1 from here."""
    mode = os.environ.get(MODE_ENV)
    if mode in ("l1", "direct"):
        return mode == "l1"
    return not os.environ.get(IN_LAB_ENV) and kvm_kind() != "hardware"
