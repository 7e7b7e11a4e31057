"""What plugvm's tests, and the tests of plugin authors, need to drive a real guest.

- guest_image: builds the test guest (Debian cloud kernel + busybox initramfs).
- l1_image: builds the lab's L1 Linux (Debian generic kernel + 9p initramfs).
- lab: runs a command in L1, a Linux under QEMU TCG whose /dev/kvm is real SVM.
- console: drives a guest's serial shell.
- pytest_plugin: the `lab` marker, batching of lab tests and the guest fixtures.
"""
