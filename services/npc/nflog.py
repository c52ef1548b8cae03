"""Blocked connections: NFLOG group 86 read straight from netlink (no ulogd).

weave-npc logs every NEW packet it drops to NFLOG group 86 (chains.py); Weave runs
ulogd to write them to a pcap and reads that back. Here the npc process binds the
group itself: a NETLINK_NETFILTER socket, an NFULNL_MSG_CONFIG "bind group 86, copy
the packet" request, then NFULNL_MSG_PACKET messages whose NFULA_PAYLOAD attribute is
the IP packet. What Weave makes of a packet (weave:npc/metrics/metrics.go): a TCP SYN
without ACK, or any UDP packet, is one blocked connection, counted in
`weavenpc_blocked_connections_total{protocol,dport}` and logged as
"TCP connection from a:p to b:q blocked by Weave NPC."; other packets are ignored.

The codec (config requests, message and packet parsing) is sans-I/O; `NflogSocket` is
the thin blocking/async shell around one socket. A group is bound by one socket per
network namespace: a second binder gets EPERM.
"""
from __future__ import annotations

import asyncio
import errno
import ipaddress
import socket
import struct
from dataclasses import dataclass

from shared.netlink_wire import NLM_F_ACK, NLM_F_REQUEST, NLMSG_ERROR, attr, attrs, error_code, message, messages

NETLINK_NETFILTER = 12
NFNL_SUBSYS_ULOG = 4
NFULNL_MSG_PACKET = 0
NFULNL_MSG_CONFIG = 1
NFULA_CFG_CMD, NFULA_CFG_MODE, NFULA_CFG_TIMEOUT, NFULA_CFG_QTHRESH = 1, 2, 4, 5
NFULNL_CFG_CMD_BIND, NFULNL_CFG_CMD_UNBIND = 1, 2
NFULNL_COPY_PACKET = 2
NFULA_PACKET_HDR, NFULA_PAYLOAD, NFULA_PREFIX = 1, 9, 10
COPY_RANGE = 128  # bytes of each packet we need: IPv4 header (<= 60) + ports and TCP flags
_NFGEN = struct.Struct("!BBH")  # family, version, res_id (network order)
TCP_SYN, TCP_ACK = 0x02, 0x10


@dataclass(frozen=True)
class LoggedPacket:
    """One NFULNL_MSG_PACKET: the group it came from and the packet bytes (IP header on)."""

    group: int
    family: int
    payload: bytes
    prefix: str = ""


@dataclass(frozen=True)
class Blocked:
    """A connection attempt that weave-npc dropped."""

    protocol: str  # "tcp" or "udp", as the metric label
    src: str
    sport: int
    dst: str
    dport: int

    def log_line(self, src_who: str = "", dst_who: str = "") -> str:
        line = (f"{self.protocol.upper()} connection from {self.src}:{self.sport} to {self.dst}:{self.dport} "
                "blocked by Weave NPC.")
        if src_who or dst_who:
            line += f" source: {src_who or 'unknown'}; destination: {dst_who or 'unknown'}"
        return line


# ---- requests ---------------------------------------------------------------------

def _config(group: int, family: int, attributes: bytes, seq: int) -> bytes:
    body = _NFGEN.pack(family, 0, group) + attributes
    return message((NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG, NLM_F_REQUEST | NLM_F_ACK, seq, body)


def bind_requests(group: int, copy_range: int = COPY_RANGE) -> list[bytes]:
    """Bind `group`, copy `copy_range` bytes of each packet, deliver each at once."""
    return [
        _config(group, socket.AF_UNSPEC, attr(NFULA_CFG_CMD, bytes([NFULNL_CFG_CMD_BIND])), 1),
        _config(group, socket.AF_UNSPEC, attr(NFULA_CFG_MODE, struct.pack("!IBB", copy_range,
                                                                          NFULNL_COPY_PACKET, 0)), 2),
        _config(group, socket.AF_UNSPEC, attr(NFULA_CFG_QTHRESH, struct.pack("!I", 1)), 3),
        _config(group, socket.AF_UNSPEC, attr(NFULA_CFG_TIMEOUT, struct.pack("!I", 0)), 4),
    ]


# ---- parsing ----------------------------------------------------------------------

class NetlinkError(OSError):
    """The kernel refused a request (an NLMSG_ERROR with a non-zero code)."""


def parse_messages(data: bytes) -> tuple[list[LoggedPacket], list[int]]:
    """(packets, error codes of NLMSG_ERROR replies; 0 is an ACK). Truncated or
    malformed trailing bytes are ignored: the kernel never sends them."""
    packets, errors = [], []
    for kind, _, _, body in messages(data, strict=False):
        if kind == NLMSG_ERROR and len(body) >= 4:
            errors.append(error_code(body))
        elif kind == (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET and len(body) >= _NFGEN.size:
            packets.append(_packet(body))
    return packets, errors


def _packet(body: memoryview) -> LoggedPacket:
    family, _, group = _NFGEN.unpack_from(body)
    found = {kind: bytes(value) for kind, value in attrs(body, _NFGEN.size, strict=False)}
    prefix = found.get(NFULA_PREFIX, b"").rstrip(b"\0").decode(errors="replace")
    return LoggedPacket(group, family, found.get(NFULA_PAYLOAD, b""), prefix)


def blocked_connection(payload: bytes) -> Blocked | None:
    """Weave's reading of a logged IPv4 packet; None for what it does not count
    (not TCP/UDP, TCP other than a plain SYN, fragments, truncated headers)."""
    if len(payload) < 20 or payload[0] >> 4 != 4:
        return None
    ihl = (payload[0] & 0x0F) * 4
    proto = payload[9]
    fragment_offset = struct.unpack_from("!H", payload, 6)[0] & 0x1FFF
    if fragment_offset or len(payload) < ihl + 4 or proto not in (socket.IPPROTO_TCP, socket.IPPROTO_UDP):
        return None
    src, dst = str(ipaddress.IPv4Address(payload[12:16])), str(ipaddress.IPv4Address(payload[16:20]))
    sport, dport = struct.unpack_from("!HH", payload, ihl)
    if proto == socket.IPPROTO_UDP:
        return Blocked("udp", src, sport, dst, dport)
    if len(payload) < ihl + 14:
        return None
    flags = payload[ihl + 13]
    if flags & TCP_SYN and not flags & TCP_ACK:
        return Blocked("tcp", src, sport, dst, dport)
    return None


# ---- the socket ---------------------------------------------------------------------

class NflogSocket:
    """One bound NFLOG group in the calling thread's network namespace."""

    def __init__(self, group: int, rcvbuf: int = 1 << 20) -> None:
        self.group = group
        self.overruns = 0  # times the kernel dropped messages because we were slow
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_NETFILTER)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            self.sock.bind((0, 0))
            self._bind()
        except BaseException:
            self.sock.close()
            raise
        self.sock.setblocking(False)

    def _bind(self) -> None:
        """Send the config requests and wait for each ACK (raises NetlinkError: EPERM
        when another socket holds the group or without CAP_NET_ADMIN)."""
        self.sock.settimeout(2.0)
        for request in bind_requests(self.group):
            self.sock.send(request)
            while True:
                _, errors = parse_messages(self.sock.recv(65536))
                if errors:
                    break
            if errors[0]:
                raise NetlinkError(errors[0], f"NFLOG group {self.group}: {errno.errorcode.get(errors[0], errors[0])}")

    async def receive(self) -> list[LoggedPacket]:
        """The next batch of logged packets (waits for at least one message)."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                data = await loop.sock_recv(self.sock, 1 << 16)
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self.overruns += 1  # the kernel dropped some; carry on with what comes next
                continue
            packets, _ = parse_messages(data)
            if packets:
                return packets

    def close(self) -> None:
        self.sock.close()
