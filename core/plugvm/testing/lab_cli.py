"""plugvm-lab: run one command where real Linux guests can run under KVM (see plugvm.testing.lab).

Exits with the command's own status; 125 when the lab itself failed.
"""

from __future__ import annotations

import argparse
import sys

from plugvm.testing.errors import TestingError
from plugvm.testing.lab import Lab

LAB_FAILED = 125


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="plugvm-lab", description=__doc__.splitlines()[0],
                                     usage="%(prog)s [options] -- COMMAND [ARG...]")
    parser.add_argument("--timeout", type=float, default=3600.0, help="kill the run after this many seconds")
    parser.add_argument("--memory", default="4G", help="L1's memory (default 4G)")
    parser.add_argument("--keep", action="store_true", help="keep the run's folder (console log, dmesg)")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    lab = Lab(memory=args.memory, attempts=3)   # the demo and benches: see lab.py on QEMU 7.2 stalls
    try:
        run = lab.run(command, timeout=args.timeout)
    except TestingError as e:
        print(f"plugvm-lab: error: {e}", file=sys.stderr)
        return LAB_FAILED
    boot = f", L1 boot {run.boot_seconds:.1f} s" if run.boot_seconds is not None else ""
    lab.status(f"command exited {run.returncode} after {run.seconds:.1f} s ({run.mode}{boot}, "
               f"attempts {run.attempts})")
    if args.keep:
        lab.status(f"run folder kept: {run.results}")
    else:
        run.cleanup()
    return run.returncode


if __name__ == "__main__":
    sys.exit(main())
