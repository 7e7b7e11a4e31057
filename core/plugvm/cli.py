"""The plugvm command: cloud-hypervisor's options, exit status 0 when the guest powers
off, 1 with one line on stderr for any error."""

from __future__ import annotations

import sys

from plugvm import logs, plugins
from plugvm.config import ConfigError, parse_cli
from plugvm.errors import PlugvmError
from plugvm.vmm import Vmm


def main(argv: list[str] | None = None) -> int:
    try:
        registry = plugins.load()
        cli = parse_cli(sys.argv[1:] if argv is None else argv, registry)
    except (ConfigError, plugins.PluginError) as e:
        print(f"plugvm: error: {e}", file=sys.stderr)
        return 1
    if cli.list_plugins:
        print(plugins.describe(registry))
        return 0
    logs.configure(cli.verbosity, cli.log_file)
    if cli.vm is None:
        print("plugvm: error: --kernel is required (the REST API that would create the VM is not served yet)",
              file=sys.stderr)
        return 1
    try:
        return Vmm(cli.vm, registry).run()
    except PlugvmError as e:
        print(f"plugvm: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
