"""The virtio-console in the Debian guest on plugvm (lab): hvc0 into a file, and
cloud-hypervisor's own default setup, `--serial null --console tty` with the kernel's
console on hvc0, where the guest's shell is driven over plugvm's stdin and stdout."""

import time

import pytest

pytestmark = pytest.mark.lab
PCI = "for d in /sys/bus/pci/devices/*; do echo ${d##*/} $(cat $d/vendor $d/device); done"


def test_console_file_holds_what_the_guest_writes_to_hvc0(launch_guest, tmp_path):
    out = tmp_path / "hvc0.log"
    guest = launch_guest("plugvm", extra=["--console", f"file={out}"])
    run = guest.console.run
    assert run("echo plugvm-wrote-hvc0 > /dev/hvc0; printf 'second line\\n' > /dev/hvc0") == ""
    deadline = time.monotonic() + 10
    while b"second line" not in out.read_bytes() and time.monotonic() < deadline:
        time.sleep(0.1)
    # The guest's tty turns \n into \r\n (ONLCR), as on any terminal.
    assert out.read_bytes().replace(b"\r\n", b"\n") == b"plugvm-wrote-hvc0\nsecond line\n"
    # The console at 00:01.0 (virtio id 3: PCI device 0x1043), before rng.
    assert run(PCI).splitlines() == ["0000:00:00.0 0x8086 0x0d57", "0000:00:01.0 0x1af4 0x1043",
                                     "0000:00:02.0 0x1af4 0x1044"]
    assert guest.poweroff() == 0


def test_cloud_hypervisors_default_console_carries_the_shell_across_a_reboot(launch_guest, guest_image):
    cmdline = guest_image.quiet().cmdline.replace("console=ttyS0", "console=hvc0")
    guest = launch_guest("plugvm", extra=["--serial", "null", "--console", "tty", "--cmdline", cmdline])
    run = guest.console.run
    assert run("cat /sys/class/tty/console/active") == "hvc0"
    assert run("tty") == "/dev/hvc0"
    # A long line typed through plugvm's stdin (busybox's line editor takes up to 1024).
    assert run("echo " + "x" * 900 + " | wc -c") == "901"
    # The device offers VIRTIO_CONSOLE_F_SIZE (features bit 0, the first character), as ch's.
    assert run("for d in /sys/bus/virtio/devices/*; do echo $(cat $d/device) $(cut -c1 $d/features); done"
               " | grep ^0x0003") == "0x0003 1"
    assert run(PCI).splitlines()[1] == "0000:00:01.0 0x1af4 0x1043"
    # A reboot builds a new virtio-console on the same host end: the shell comes back on it.
    guest.console.send("reboot\n")
    guest.wait_ready(240)
    assert run("tty") == "/dev/hvc0"
    assert float(run("cut -d' ' -f1 /proc/uptime")) < 120
    assert guest.poweroff() == 0
