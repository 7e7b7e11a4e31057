"""``plugvm-remote --api-socket PATH <command> [args]``: ch-remote's syntax, output and exit codes.

Exit 0 on success (the response body, if any, printed with a newline);
1 on any API, socket or syntax error (ch-remote's error chain on stderr);
2 for a command line argparse rejects (clap's code).
"""

from __future__ import annotations

import argparse
import sys
import unicodedata

from plugvm_remote import __version__
from plugvm_remote.client import DEFAULT_TIMEOUT, ApiClient
from plugvm_remote.commands import ADD, SIMPLE, build_request
from plugvm_remote.errors import (PROGRAM, CommandError, IoError, RemoteError, ServerResponseError,
                                  format_error_chain)

ABOUT = {
    "ping": "Ping the VMM to check for API server availability",
    "shutdown-vmm": "Shutdown the VMM",
    "info": "Info on the VM",
    "counters": "Counters from the VM",
    "boot": "Boot a created VM",
    "delete": "Delete a VM",
    "shutdown": "Shutdown the VM",
    "reboot": "Reboot the VM",
    "pause": "Pause the VM",
    "resume": "Resume the VM",
    "power-button": "Trigger a power button in the VM",
    "nmi": "Trigger NMI",
    "add-disk": "Add block device",
    "add-net": "Add network device",
    "add-fs": "Add virtio-fs backed fs device",
    "add-pmem": "Add persistent memory device",
    "add-vsock": "Add vsock device",
    "add-device": "Add VFIO device",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROGRAM, description="Remotely control a plugvm (or cloud-hypervisor) VMM.")
    parser.add_argument("--api-socket", metavar="PATH", help="HTTP API socket path (UNIX domain socket).")
    parser.add_argument("--version", action="version", version=f"{PROGRAM} {__version__}")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"give up on a VMM that has not answered after SECONDS (default {DEFAULT_TIMEOUT:.0f}; "
                             "ch-remote waits for ever)")
    parser.add_argument("--wait", type=float, default=None, metavar="SECONDS",
                        help="add-* and remove-device: answer once the guest has enabled the added device or "
                             "ejected the removed one (up to SECONDS; RFC 7240 `Prefer: wait`, a plugvm extension); "
                             "exit 1 if it has not by then")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    for name in SIMPLE:
        sub.add_parser(name, help=ABOUT[name])
    for name in ADD:
        sub.add_parser(name, help=ABOUT[name]).add_argument("config", help="key=value,... device options")
    create = sub.add_parser("create", help="Create VM from a JSON configuration")
    create.add_argument("path", nargs="?", default="-", help="VmConfig JSON file, - for stdin (default)")
    resize = sub.add_parser("resize", help="Resize the VM")
    resize.add_argument("--balloon", help="New balloon size in bytes (supports K/M/G suffix)")
    resize.add_argument("--cpus", help="New vCPUs count")
    resize.add_argument("--memory", help="New memory size in bytes (supports K/M/G suffix)")
    zone = sub.add_parser("resize-zone", help="Resize a memory zone")
    zone.add_argument("--id", required=True, help="Memory zone identifier")
    zone.add_argument("--size", required=True, help="New memory zone size in bytes (supports K/M/G suffix)")
    disk = sub.add_parser("resize-disk", help="Resize an attached disk")
    disk.add_argument("--disk", required=True, help="Disk identifier")
    disk.add_argument("--size", required=True, help="New disk size")
    remove = sub.add_parser("remove-device", help="Remove VFIO and PCI device")
    remove.add_argument("id", help="<device_id>")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit code (argparse errors raise SystemExit(2))."""
    args = build_parser().parse_args(argv)
    if args.api_socket is None:
        print("Please either provide the api-socket option or dbus-service-name and "
              "dbus-object-path options", file=sys.stderr)
        return 1
    headers = {}
    timeout = args.timeout if args.timeout > 0 else None
    if args.wait is not None:
        if args.wait < 0 or args.wait != int(args.wait):
            print(f"--wait: {args.wait:g} is not a whole number of seconds", file=sys.stderr)
            return 1
        if args.command in ADD or args.command == "remove-device":
            headers["Prefer"] = f"wait={int(args.wait)}"
            if timeout is not None:
                timeout = max(timeout, args.wait + 30)      # the VMM answers after the wait
    client = ApiClient(args.api_socket, timeout)
    try:
        # ch-remote opens the socket before it looks at the subcommand's arguments.
        client.connect()
    except OSError as e:
        print(f"Error opening HTTP socket: {IoError(e)}", file=sys.stderr)
        return 1
    try:
        request = build_request(args)
        try:
            body = client.request(request.method, request.command, request.body, request.fds, headers)
        except ServerResponseError as e:
            if headers and e.status == 202:
                what = "enabled the device" if args.command in ADD else "ejected the device"
                sys.stderr.write(printable(f"{PROGRAM}: the guest has not {what} within {args.wait:g} s; "
                                           f"still pending: {e.body}") + "\n")
                return 1
            raise CommandError("http client error") from e
        except RemoteError as e:
            raise CommandError("http client error") from e
    except RemoteError as e:
        sys.stderr.write(printable(format_error_chain(e)))
        return 1
    finally:
        client.close()
    if body:
        sys.stdout.write(printable(body) + "\n")
    return 0


def printable(text: str) -> str:
    """text with control characters (an escape sequence from a hostile server, say)
    shown as \\xNN instead of reaching the terminal; newlines and tabs stay."""
    return "".join(c if c in "\n\t" or unicodedata.category(c)[0] != "C" else
                   (f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}") for c in text)


if __name__ == "__main__":
    sys.exit(main())
