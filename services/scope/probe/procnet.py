"""/proc/<pid>/net/tcp and tcp6 (sans-I/O), as Scope's procspy reads them.

Rows are `sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid
timeout inode ...`; addresses are hex, each 32-bit word in host (little-endian) order,
the port big-endian hex. Only connections that carry (or just carried) traffic are
kept, as Scope: ESTABLISHED, FIN_WAIT1, FIN_WAIT2 and CLOSE_WAIT; listening sockets
and TIME_WAIT rows (which have no inode) are not connections. An inode seen twice
(tcp then tcp6 of one namespace) counts once; orphaned sockets (inode 0, closed by their
process while the kernel finishes the connection) are each kept. IPv4-mapped IPv6 addresses are shown as
IPv4, as Go's net.IP prints them.
"""
from __future__ import annotations

import socket
from typing import NamedTuple

from services.scope.probe.procfs import ProcFormatError

TCP_ESTABLISHED, TCP_FIN_WAIT1, TCP_FIN_WAIT2, TCP_CLOSE_WAIT = 0x01, 0x04, 0x05, 0x08
LIVE_STATES = frozenset({"01", "04", "05", "08"})


class Connection(NamedTuple):
    """One TCP socket of a namespace, seen from its own end (a tuple: thousands a second)."""

    local_addr: str
    local_port: int
    remote_addr: str
    remote_port: int
    state: int
    inode: int


_ADDRESSES: dict[str, str] = {}
"""hex address -> text: a namespace shows few distinct addresses, each in many rows."""
_ADDRESSES_MAX = 4096


def decode_address(field: str) -> tuple[str, int]:
    """'0100007F:1F90' -> ('127.0.0.1', 8080); 32 hex digits for IPv6."""
    hexaddr, _, hexport = field.partition(":")
    try:
        port = int(hexport, 16)
    except ValueError:
        raise ProcFormatError("net/tcp", f"bad port in {field!r}") from None
    text = _ADDRESSES.get(hexaddr)
    if text is None:
        text = _address(hexaddr, field)
        if len(_ADDRESSES) >= _ADDRESSES_MAX:
            _ADDRESSES.clear()
        _ADDRESSES[hexaddr] = text
    return text, port


def _address(hexaddr: str, field: str) -> str:
    try:
        raw = bytes.fromhex(hexaddr)
    except ValueError:
        raise ProcFormatError("net/tcp", f"bad address {field!r}") from None
    if len(raw) not in (4, 16):
        raise ProcFormatError("net/tcp", f"bad address length in {field!r}")
    swapped = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    if len(swapped) == 4:
        return socket.inet_ntop(socket.AF_INET, swapped)
    if swapped[:12] == _V4_MAPPED:
        return socket.inet_ntop(socket.AF_INET, swapped[12:])
    return socket.inet_ntop(socket.AF_INET6, swapped)


_V4_MAPPED = bytes(10) + b"\xff\xff"


def parse_tcp(data: bytes, seen: set[int] | None = None) -> list[Connection]:
    """Live connections of one /proc/net/tcp or tcp6 file. `seen`: inodes already
    returned for this namespace (updated), so tcp + tcp6 yield each socket once."""
    seen = set() if seen is None else seen
    out = []
    for line in data.decode("ascii", "replace").splitlines():
        f = line.split()
        if len(f) < 10 or f[3] not in LIVE_STATES:
            continue  # the header (st is 'st'), or not a live connection
        inode = int(f[9])
        if inode:  # 0: an orphaned socket (its process closed it), never shared
            if inode in seen:
                continue
            seen.add(inode)
        laddr, lport = decode_address(f[1])
        raddr, rport = decode_address(f[2])
        out.append(Connection(laddr, lport, raddr, rport, int(f[3], 16), inode))
    return out
