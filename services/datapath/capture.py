"""Capture and inject on the weave bridge, with the kernel's virtio-net header.

`PacketPort` (the one the service uses): an AF_PACKET socket on `vethwe-pcap`, the
far end of the bridge's `vethwe-bridge` port (Weave's pcap layout, bridge.py), with
- PACKET_VNET_HDR: every frame read or written is preceded by a 10-byte
  virtio_net_hdr, so GSO superframes and partial checksums come through whole
  (sleeve/offload.py says what is done with them);
- PACKET_IGNORE_OUTGOING: frames leaving vethwe-pcap (ours) are not read back
  (Weave's BPF `inbound`);
- PACKET_QDISC_BYPASS on injection, big socket buffers; non-blocking.

`TapPort`: the alternative the brief asked to measure: a TAP device (IFF_VNET_HDR,
TUNSETOFFLOAD for TSO/checksum offload) enslaved to the bridge directly.
bench/datapath.py measures both; AF_PACKET is kept (see its figures): it matches
Weave's device layout (`weave ps`, the status views and `weave reset` know it) and
reads as fast.

Both have `fileno()`, `recv_into(buf) -> n` (header + frame, BlockingIOError when
empty) and `send(vnet, frame)`. Sockets are made in the calling thread's namespace.
"""
from __future__ import annotations

import fcntl
import os
import socket
import struct

from services.datapath.sleeve.offload import VNET_LEN, ZERO_VNET
from services.datapath.sockopts import big_buffers

SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_QDISC_BYPASS = 20
PACKET_IGNORE_OUTGOING = 23
PACKET_STATISTICS = 6
ETH_P_ALL = 0x0003
SOCKET_BUFFER = 8 * 1024 * 1024
FRAME_BUFFER = VNET_LEN + 65536 + 14 + 64
"""Largest read: header + a 64 KiB GSO frame + its Ethernet header, with room."""


class PacketPort:
    """AF_PACKET capture/inject on `ifname` (module docstring)."""

    def __init__(self, ifname: str) -> None:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        try:
            sock.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
            sock.setsockopt(SOL_PACKET, PACKET_QDISC_BYPASS, 1)
            big_buffers(sock, SOCKET_BUFFER)
            sock.bind((ifname, ETH_P_ALL))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.ifname = ifname
        self.sock = sock
        self.recv_into = sock.recv_into
        self._sendmsg = sock.sendmsg
        self.received = self.dropped = 0

    def fileno(self) -> int:
        return self.sock.fileno()

    def stats(self) -> tuple[int, int]:
        """(frames received, frames the kernel dropped for lack of socket buffer) since
        the socket opened: PACKET_STATISTICS, which resets at each read, accumulated."""
        try:
            packets, drops = struct.unpack("II", self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        except OSError:
            return self.received, self.dropped
        self.received += packets
        self.dropped += drops
        return self.received, self.dropped

    def send(self, vnet: bytes | None, frame: bytes | memoryview) -> None:
        self._sendmsg((vnet or ZERO_VNET, frame))

    def close(self) -> None:
        self.sock.close()


# -- TAP (measured against; see the module docstring) ------------------------------------
TUNSETIFF = 0x400454CA
TUNSETOFFLOAD = 0x400454D0
IFF_TAP, IFF_NO_PI, IFF_VNET_HDR = 0x0002, 0x1000, 0x4000
TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6, TUN_F_TSO_ECN = 0x01, 0x02, 0x04, 0x08


class TapPort:
    """A TAP device `ifname` with virtio-net headers and TSO; the caller enslaves it to
    the bridge and brings it up (it exists while this object is open)."""

    def __init__(self, ifname: str) -> None:
        fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", ifname.encode(), IFF_TAP | IFF_NO_PI | IFF_VNET_HDR))
            fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6 | TUN_F_TSO_ECN)
        except BaseException:
            os.close(fd)
            raise
        self.ifname, self.fd = ifname, fd

    def fileno(self) -> int:
        return self.fd

    def recv_into(self, buf: bytearray) -> int:
        return os.readv(self.fd, [buf])

    def send(self, vnet: bytes | None, frame: bytes | memoryview) -> None:
        os.writev(self.fd, [vnet or ZERO_VNET, frame])

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
