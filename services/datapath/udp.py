"""The sleeve's UDP sockets (weave:router/sleeve.go, udp_sender_df).

- One UDP socket bound to <launch host>:<port> (6783) with IP_PMTUDISC_DONT: it
  receives every sleeve datagram and sends the non-DF ones (the kernel fragments
  them when they exceed the path MTU).
- Per remote IP one raw `ip4:udp` socket with IP_PMTUDISC_DO for the DF channel: the
  UDP header is built here (source port = ours, checksum 0, legal for IPv4), so the
  datagram leaves from our sleeve port with DF set. The kernel refuses a DF datagram
  larger than the path MTU with EMSGSIZE; `send` then returns the path MTU (IP_MTU),
  which the caller hands to the forwarder (msg_too_big). Raw sockets would also get a
  copy of every incoming UDP packet: a BPF filter that accepts nothing prevents it.

- Segment trains (sleeve/train.py) between weave-py peers: `send_train` hands the
  kernel a whole train in one `sendmsg` with UDP_SEGMENT; the receiving socket has
  UDP_GRO on, so `recv_into` may return several datagrams of one size at once and says
  which size (0: one datagram). A kernel without them (< 4.18 / 5.0) gets neither:
  `gro` is False, and the forwarders do not offer trains.

All sockets are non-blocking. A send that would block (buffers full) or fails
otherwise drops the datagram and is counted by reason in `drops`, as a network
would lose it; nothing here raises on the data path.
"""
from __future__ import annotations

import errno
import socket
import struct
import sys
from collections import Counter

from services.datapath.sockopts import attach_drop_all, big_buffers

IP_MTU = 14
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
_GRO_CMSG_SPACE = socket.CMSG_SPACE(4)
IP_MTU_DISCOVER = 10
IP_PMTUDISC_DONT, IP_PMTUDISC_DO = 0, 2
SOCKET_BUFFER = 8 * 1024 * 1024
MAX_DATAGRAM = 65536

_UDP_HEADER = struct.Struct("!HHHH")
_LITTLE = sys.byteorder == "little"


class UdpTransport:
    """Sleeve datagrams in and out for local address `host` (an IPv4 address or
    0.0.0.0) and `port`."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
            big_buffers(sock, SOCKET_BUFFER)
            sock.bind((host, port))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        try:
            sock.setsockopt(SOL_UDP, UDP_GRO, 1)
            self.gro = True
        except OSError:
            self.gro = False
        self.sock = sock
        self.recvfrom_into = sock.recvfrom_into
        self._recvmsg_into = sock.recvmsg_into
        self._sendto = sock.sendto
        self._sendmsg = sock.sendmsg
        self._df: dict[str, socket.socket] = {}
        self.drops: Counter[str] = Counter()

    def recv_into(self, buf: bytearray) -> tuple[int, tuple[str, int], int]:
        """One read: (bytes, sender, GRO segment size or 0 for one datagram)."""
        n, ancdata, flags, addr = self._recvmsg_into([buf], _GRO_CMSG_SPACE)
        if flags & socket.MSG_TRUNC:
            self.drops["receive_truncated"] += 1
            return 0, addr, 0
        for level, kind, data in ancdata:
            if level == SOL_UDP and kind == UDP_GRO:
                return n, addr, int.from_bytes(data[:4], "little" if _LITTLE else "big")
        return n, addr, 0

    def send_train(self, sends: list[list], addr: tuple[str, int], seg: int) -> bool:
        """One train (TrainSender.sends): a sendmsg per iovec list, UDP_SEGMENT = seg.
        False (counted) if the kernel refused one; the rest of the train is not sent."""
        cmsg = [(SOL_UDP, UDP_SEGMENT, seg.to_bytes(2, "little" if _LITTLE else "big"))]
        try:
            for iov in sends:
                self._sendmsg(iov, cmsg, 0, addr)
        except OSError as exc:
            self.drops["train_" + _reason(exc)] += 1
            return False
        return True

    def fileno(self) -> int:
        return self.sock.fileno()

    def send(self, payload: bytes | bytearray, addr: tuple[str, int], df: bool) -> int | None:
        """Send one datagram; returns the path MTU when a DF datagram was too big."""
        try:
            if not df:
                self._sendto(payload, addr)
                return None
            sock = self._df.get(addr[0]) or self._open_df(addr[0])
            sock.sendmsg((_UDP_HEADER.pack(self.port, addr[1], 8 + len(payload), 0), payload))
        except OSError as exc:
            if exc.errno == errno.EMSGSIZE and df:
                return self._df[addr[0]].getsockopt(socket.IPPROTO_IP, IP_MTU)
            self.drops[_reason(exc)] += 1
        return None

    def _open_df(self, ip: str) -> socket.socket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
        try:
            attach_drop_all(sock)
            sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO)
            big_buffers(sock, SOCKET_BUFFER, receive=False)
            if self.host != "0.0.0.0":
                sock.bind((self.host, 0))
            sock.connect((ip, 0))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._df[ip] = sock
        return sock

    def forget(self, ip: str) -> None:
        """Close the DF socket of a peer address no forwarder uses any more."""
        sock = self._df.pop(ip, None)
        if sock is not None:
            sock.close()

    def close(self) -> None:
        for ip in list(self._df):
            self.forget(ip)
        self.sock.close()


def _reason(exc: OSError) -> str:
    if exc.errno in (errno.EAGAIN, errno.ENOBUFS):
        return "send_buffer_full"
    if exc.errno in (errno.ECONNREFUSED, errno.EHOSTUNREACH, errno.ENETUNREACH):
        return "send_unreachable"
    return "send_failed"
