"""The reference: the test guest under QEMU with KVM, driven through its console.

This proves the lab (real KVM, the guest image, the console fixture) and is
what the benchmarks compare plugvm with.
"""

import pytest

pytestmark = pytest.mark.lab


def test_guest_boots_under_qemu_and_powers_off(launch_guest, guest_image, record_property):
    guest = launch_guest("qemu", cpus=2, memory="512M")
    record_property("boot_seconds", round(guest.boot_seconds, 2))
    print(f"QEMU q35: process start → {guest_image.ready_marker} in {guest.boot_seconds:.1f} s")
    console = guest.console
    assert console.run("uname -r") == guest_image.release
    assert console.run("grep -c ^processor /proc/cpuinfo") == "2"
    assert console.run("cat /sys/devices/system/cpu/online") == "0-1"
    assert "Hypervisor detected: KVM" in console.run("dmesg")
    loaded = {line.split()[0] for line in console.run("cat /proc/modules").splitlines()}
    assert set(guest_image.modules) <= loaded
    assert console.run("cat /sys/devices/system/memory/auto_online_blocks") == "online"
    assert guest.poweroff() == 0
