"""The demo: boot the test guest and show a scripted session on its console.

`make demo` runs this in the lab (or directly on a hardware-KVM host), with plugvm
as the VMM: two vCPUs booted of four possible, 512 MiB, the console on the serial
port; then a poweroff that ends plugvm with status 0.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from plugvm.testing.guest import Guest
from plugvm.testing.guest_image import GuestImage
from plugvm.testing.vmms import plugvm_argv

SESSION = [
    "uname -a",
    "grep -c ^processor /proc/cpuinfo",
    "grep -E 'MemTotal|MemFree' /proc/meminfo",
    "cat /proc/cmdline",
    "ls /sys/bus/pci/devices",
    "cut -d' ' -f1 /proc/modules | sort | tr '\\n' ' '",
    "dmesg | grep -m1 'Hypervisor detected'",
    "cat /sys/devices/system/cpu/online /sys/devices/system/cpu/possible",
    "ls /sys/firmware/acpi/tables",
]


def main() -> int:
    image = GuestImage.load()
    argv = plugvm_argv(image, "boot=2,max=4", "512M")
    print(f"demo: booting {image.release} under: {' '.join(argv)}", flush=True)
    guest = Guest(argv, image, Path(tempfile.mkdtemp(prefix="plugvm-demo-")))
    try:
        guest.wait_ready()
        print(f"demo: guest ready {guest.boot_seconds:.1f} s after the VMM started", flush=True)
        for cmd in SESSION:
            print(f"guest# {cmd}\n{guest.console.run(cmd)}", flush=True)
        start = time.monotonic()
        status = guest.poweroff()
        print(f"guest# poweroff\ndemo: VMM exited {status} {time.monotonic() - start:.1f} s later", flush=True)
        return status
    finally:
        guest.kill()


if __name__ == "__main__":
    sys.exit(main())
