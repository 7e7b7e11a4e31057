"""The plugvm command: cloud-hypervisor's options, exit status 0 when the guest powers
off, 1 with one line on stderr for any error."""

from __future__ import annotations

import signal
import sys

from plugvm import logs, plugins
from plugvm.config import parse_cli
from plugvm.errors import PlugvmError
from plugvm.logs import get_logger
from plugvm.vmm import Vmm

log = get_logger(__name__)


def main(argv: list[str] | None = None) -> int:
    """The command; every error, expected or not, ends as one line and exit status 1."""
    try:
        return _main(argv)
    except PlugvmError as e:
        print(f"plugvm: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except Exception as e:      # a bug: still one line for the user, the traceback for -v logs
        log.exception("plugvm failed")
        print(f"plugvm: error: internal error: {type(e).__name__}: {str(e)[:300]}", file=sys.stderr)
        return 1


def _main(argv: list[str] | None) -> int:
    registry = plugins.load()
    cli = parse_cli(sys.argv[1:] if argv is None else argv, registry)
    if cli.list_plugins:
        print(plugins.describe(registry))
        return 0
    logs.configure(cli.verbosity, cli.log_file)
    if cli.vm is None and cli.api_socket is None:
        print("plugvm: error: --kernel: required unless --api-socket is given (then vm.create and vm.boot "
              "through the API start a VM)", file=sys.stderr)
        return 1
    server = monitor = None
    if cli.event_monitor is not None:
        from plugvm.builtin.event_monitor import EventMonitor
        monitor = EventMonitor(cli.event_monitor.open())
        registry.register(monitor, name="event-monitor")
        monitor.emit("vmm", "starting")
    try:
        vmm = Vmm(cli.vm, registry)
        # What service managers and orchestrators send to stop a VMM: an orderly
        # shutdown (the VM torn down, the API socket and its lock file removed), exit 0.
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, lambda signum, frame: vmm.request_exit(0, signal.Signals(signum).name))
        if cli.api_socket is not None:
            # Bound now (a bad path fails before the VM boots; early clients wait in the
            # backlog); Falcon and waitress are imported in the API's thread, started
            # once the VM runs.
            from plugvm.api.listener import ApiService

            server = ApiService(cli.api_socket, vmm)
        return vmm.run(running=server.start if server is not None else None)
    finally:
        if server is not None:
            server.close()
        if monitor is not None:
            monitor.emit("vmm", "shutdown")
            monitor.close()


if __name__ == "__main__":
    sys.exit(main())
