"""NFLOG codec: the bind requests byte for byte, netlink messages as the kernel sends
them, and Weave's reading of a logged packet (only plain SYNs and UDP count)."""
from __future__ import annotations

import socket
import struct

import pytest

from services.npc.nflog import Blocked, LoggedPacket, bind_requests, blocked_connection, parse_messages


def nlmsg(kind: int, body: bytes, flags: int = 0, seq: int = 0) -> bytes:
    raw = struct.pack("=IHHII", 16 + len(body), kind, flags, seq, 0) + body
    return raw + b"\0" * (-len(raw) % 4)


def nla(kind: int, data: bytes) -> bytes:
    raw = struct.pack("=HH", 4 + len(data), kind) + data
    return raw + b"\0" * (-len(raw) % 4)


def ipv4(proto: int, l4: bytes, src="10.32.0.2", dst="10.32.0.1", frag=0, ihl=5) -> bytes:
    header = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 20 + len(l4), 1, frag, 64, proto, 0,
                         socket.inet_aton(src), socket.inet_aton(dst)) + b"\0" * (ihl * 4 - 20)
    return header + l4


def tcp(sport: int, dport: int, flags: int) -> bytes:
    return struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, 65535, 0, 0)


def udp(sport: int, dport: int) -> bytes:
    return struct.pack("!HHHH", sport, dport, 8, 0)


def test_bind_requests_golden():
    bind, mode, qthresh, timeout = bind_requests(86)
    # nlmsghdr (len 28, NFNL_SUBSYS_ULOG<<8 | CONFIG, REQUEST|ACK, seq 1), nfgenmsg(AF_UNSPEC, 0, 86),
    # NFULA_CFG_CMD = BIND (attribute padded to 8)
    assert bind == bytes.fromhex("1c000000 0104 0500 01000000 00000000 00000056 0500 0100 01000000")
    # NFULA_CFG_MODE: copy_range 128 (big endian), NFULNL_COPY_PACKET, pad
    assert mode == bytes.fromhex("20000000 0104 0500 02000000 00000000 00000056 0a00 0200 00000080 0200 0000")
    assert qthresh.endswith(bytes.fromhex("0800 0500 00000001")) and timeout.endswith(bytes.fromhex("0800 0400 00000000"))


def test_packets_and_acks_are_parsed():
    payload = ipv4(6, tcp(40000, 80, 0x02))
    body = struct.pack("!BBH", socket.AF_INET, 0, 86) + nla(1, struct.pack("!HBB", 0x0800, 3, 0)) + \
        nla(10, b"weave\0") + nla(9, payload)
    ack = nlmsg(2, struct.pack("=i", 0) + b"\0" * 16)
    err = nlmsg(2, struct.pack("=i", -1) + b"\0" * 16)
    data = ack + nlmsg(0x0400, body) + err + b"\x01\x02"  # trailing garbage ignored
    packets, errors = parse_messages(data)
    assert packets == [LoggedPacket(86, socket.AF_INET, payload, "weave")]
    assert errors == [0, 1]


@pytest.mark.parametrize("payload, expected", [
    (ipv4(6, tcp(40000, 80, 0x02)), Blocked("tcp", "10.32.0.2", 40000, "10.32.0.1", 80)),
    (ipv4(6, tcp(40000, 80, 0x02), ihl=6), Blocked("tcp", "10.32.0.2", 40000, "10.32.0.1", 80)),  # IP options
    (ipv4(6, tcp(40000, 80, 0x12)), None),   # SYN+ACK: not a new connection
    (ipv4(6, tcp(40000, 80, 0x10)), None),   # ACK
    (ipv4(17, udp(5353, 53)), Blocked("udp", "10.32.0.2", 5353, "10.32.0.1", 53)),
    (ipv4(1, b"\x08\x00\x00\x00\x00\x00\x00\x00"), None),  # ICMP: Weave does not count it
    (ipv4(17, udp(1, 2), frag=0x0010), None),              # a later fragment has no ports
    (ipv4(6, tcp(1, 2, 0x02))[:30], None),                 # truncated before the flags
    (b"\x60" + b"\0" * 39, None),                          # IPv6
    (b"", None),
])
def test_what_counts_as_a_blocked_connection(payload, expected):
    assert blocked_connection(payload) == expected


def test_log_line():
    b = Blocked("tcp", "10.32.0.2", 40000, "10.32.0.1", 80)
    assert b.log_line() == "TCP connection from 10.32.0.2:40000 to 10.32.0.1:80 blocked by Weave NPC."
    assert b.log_line("namespace default, pod c2", "namespace default, pod c1") == (
        "TCP connection from 10.32.0.2:40000 to 10.32.0.1:80 blocked by Weave NPC. "
        "source: namespace default, pod c2; destination: namespace default, pod c1")

