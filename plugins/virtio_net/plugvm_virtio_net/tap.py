"""The host side: a tap device from /dev/net/tun (Linux Documentation/networking/tuntap.rst),
and its address, netmask, MAC, MTU and link state set with the classic SIOCSIF* ioctls
on an AF_INET socket (so no dependency on iproute2's `ip`)."""

from __future__ import annotations

import errno
import fcntl
import ipaddress
import os
import socket
import struct

from plugvm.errors import PlugvmError

# include/uapi/linux/if_tun.h: ioctls are _IOW('T', nr, int|unsigned int).
TUNSETIFF = 0x400454CA
TUNGETIFF = 0x800454D2
TUNSETOFFLOAD = 0x400454D0
TUNSETVNETHDRSZ = 0x400454D8
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
IFF_VNET_HDR = 0x4000
# TUNSETOFFLOAD bits: the GSO and checksum kinds the reader (the guest) accepts.
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
TUN_F_TSO6 = 0x04
TUN_F_TSO_ECN = 0x08
TUN_F_UFO = 0x10
# include/uapi/linux/sockios.h, if.h, if_arp.h
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFADDR = 0x8916
SIOCSIFNETMASK = 0x891C
SIOCSIFMTU = 0x8922
SIOCSIFHWADDR = 0x8924
IFF_UP = 0x1
ARPHRD_ETHER = 1
IFREQ_SIZE = 40                 # struct ifreq: char ifr_name[16] + a 24-byte union
VNET_HDR_SIZE = 12              # struct virtio_net_hdr_v1 (virtio 1.2 §5.1.6)


class TapError(PlugvmError, OSError):
    """The tap cannot be opened or configured; the message names the option and the cause,
    and `errno` holds the failed call's errno."""

    def __init__(self, message: str, errno: int | None = None):
        super().__init__(message)
        self.errno = errno


def _ifreq(name: str, payload: bytes = b"") -> bytearray:
    return bytearray(name.encode().ljust(16, b"\0") + payload.ljust(IFREQ_SIZE - 16, b"\0"))


def _sockaddr_in(address: str) -> bytes:
    return struct.pack("=H2s4s", socket.AF_INET, b"", ipaddress.IPv4Address(address).packed)


class Tap:
    """An open, non-blocking tap with a 12-byte virtio-net header in front of every frame.
    The tap is not persistent: the kernel deletes one it created here when fd closes."""

    def __init__(self, name: str | None, option: str = "--net", fd: int | None = None):
        """Create tap `name` (vmtapN when None), or, given `fd`, take a dup of a tap the
        client opened (Kata sends one over the API socket)."""
        self.option = option
        self.fd = -1
        if fd is not None:
            self._adopt(fd)
            return
        wanted = name or "vmtap%d"              # the kernel replaces %d with the first free number
        try:
            self.fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
            request = _ifreq(wanted, struct.pack("=H", IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
            fcntl.ioctl(self.fd, TUNSETIFF, request)
            self.name = bytes(request[:16]).rstrip(b"\0").decode()
            fcntl.ioctl(self.fd, TUNSETVNETHDRSZ, struct.pack("=i", VNET_HDR_SIZE))
            # No offloads until the guest negotiates them: plain frames with a zero header.
            fcntl.ioctl(self.fd, TUNSETOFFLOAD, 0)
        except OSError as e:
            self.close()
            raise TapError(f"{option}: cannot open tap {wanted!r}: {e.strerror}", e.errno) from e

    def _adopt(self, fd: int) -> None:
        try:
            self.fd = os.dup(fd)                # ours: the VM config keeps the one that was sent
            request = _ifreq("")
            fcntl.ioctl(self.fd, TUNGETIFF, request)
            self.name = bytes(request[:16]).rstrip(b"\0").decode()
            flags = struct.unpack_from("=H", request, 16)[0]
            if flags & (IFF_TAP | IFF_NO_PI | IFF_VNET_HDR) != IFF_TAP | IFF_NO_PI | IFF_VNET_HDR:
                self.close()
                raise TapError(f"{self.option}: fd {fd} is a tun/tap without IFF_TAP|IFF_NO_PI|IFF_VNET_HDR "
                               f"(flags {flags:#x})")
            os.set_blocking(self.fd, False)
            fcntl.ioctl(self.fd, TUNSETVNETHDRSZ, struct.pack("=i", VNET_HDR_SIZE))
            fcntl.ioctl(self.fd, TUNSETOFFLOAD, 0)
        except OSError as e:
            self.close()
            what = "is not a tap" if e.errno in (errno.EBADFD, errno.EINVAL, errno.ENOTTY) else e.strerror
            raise TapError(f"{self.option}: fd {fd} {what}", e.errno) from e

    def configure(self, ip: str | None, mask: str | None, host_mac: str | None, mtu: int | None) -> None:
        """Set the host side's MAC, MTU, IPv4 address and netmask (each when given), then
        bring the link up. TapError on failure (the caller closes the tap)."""
        step = "configure"
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                if host_mac is not None:
                    step = f"set host_mac={host_mac}"
                    hwaddr = struct.pack("=H6s", ARPHRD_ETHER, bytes.fromhex(host_mac.replace(":", "")))
                    fcntl.ioctl(s, SIOCSIFHWADDR, _ifreq(self.name, hwaddr))
                if mtu is not None:
                    step = f"set mtu={mtu}"
                    fcntl.ioctl(s, SIOCSIFMTU, _ifreq(self.name, struct.pack("=i", mtu)))
                if ip is not None:
                    step = f"set ip={ip}"
                    fcntl.ioctl(s, SIOCSIFADDR, _ifreq(self.name, _sockaddr_in(ip)))
                    if mask is not None:
                        step = f"set mask={mask}"
                        fcntl.ioctl(s, SIOCSIFNETMASK, _ifreq(self.name, _sockaddr_in(mask)))
                step = "bring the link up"
                request = _ifreq(self.name)
                fcntl.ioctl(s, SIOCGIFFLAGS, request)
                flags = struct.unpack_from("=H", request, 16)[0] | IFF_UP
                fcntl.ioctl(s, SIOCSIFFLAGS, _ifreq(self.name, struct.pack("=H", flags)))
        except OSError as e:
            raise TapError(f"{self.option}: cannot {step} on tap {self.name!r}: {e.strerror}", e.errno) from e

    def set_offload(self, flags: int) -> None:
        """Tell the kernel which TUN_F_* kinds of frames the guest accepts on RX."""
        try:
            fcntl.ioctl(self.fd, TUNSETOFFLOAD, flags)
        except OSError as e:
            raise TapError(f"{self.option}: cannot set offloads {flags:#x} on tap {self.name!r}: {e.strerror}",
                           e.errno) from e

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
