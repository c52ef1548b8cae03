"""Offloaded frames (sleeve/offload.py): checksums, GSO segmentation, the mark, and
that malformed headers fail only with OffloadError."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.datapath.sleeve import offload as ol
from services.datapath.sleeve.ethernet_decoder import checksum as slow_checksum

MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")
SRC4, DST4 = bytes([10, 99, 1, 1]), bytes([10, 99, 2, 1])
SRC6, DST6 = bytes.fromhex("fd00" + "00" * 13 + "01"), bytes.fromhex("fd00" + "00" * 13 + "02")


def vnet(flags=0, gso_type=0, hdr_len=0, gso_size=0, csum_start=0, csum_offset=0) -> bytes:
    return struct.pack("=BBHHHH", flags, gso_type, hdr_len, gso_size, csum_start, csum_offset)


def pseudo_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """Folded pseudo-header sum, as the kernel leaves it in a CHECKSUM_PARTIAL field."""
    if len(src) == 4:
        return ol.ones_sum(src + dst + struct.pack("!BBH", 0, proto, length)) or 0xFFFF
    return ol.ones_sum(src + dst + struct.pack("!I3xB", length, proto)) or 0xFFFF


def tcp_frame(payload: bytes, v6=False, flags=0x18, seq=1000, ip_id=7, partial=True) -> bytes:
    tcp = bytearray(struct.pack("!HHIIBBHHH", 40000, 5201, seq, 555, 5 << 4, flags, 65535, 0, 0))
    src, dst = (SRC6, DST6) if v6 else (SRC4, DST4)
    tcp_len = len(tcp) + len(payload)
    struct.pack_into("!H", tcp, 16, pseudo_sum(src, dst, 6, tcp_len) if partial else 0)
    if v6:
        ip = struct.pack("!IHBB", 6 << 28, tcp_len, 6, 64) + src + dst
        return MAC_B + MAC_A + b"\x86\xdd" + ip + bytes(tcp) + payload
    ip = bytearray(struct.pack("!BBHHHBBH", 0x45, 0, 20 + tcp_len, ip_id, 0x4000, 64, 6, 0) + src + dst)
    struct.pack_into("!H", ip, 10, ol.checksum(ip))
    return MAC_B + MAC_A + b"\x08\x00" + bytes(ip) + bytes(tcp) + payload


def udp_frame(payload: bytes, partial=True) -> bytes:
    length = 8 + len(payload)
    udp = struct.pack("!HHHH", 5000, 9, length, pseudo_sum(SRC4, DST4, 17, length) if partial else 0)
    ip = bytearray(struct.pack("!BBHHHBBH", 0x45, 0, 20 + length, 1, 0, 64, 17, 0) + SRC4 + DST4)
    struct.pack_into("!H", ip, 10, ol.checksum(ip))
    return MAC_B + MAC_A + b"\x08\x00" + bytes(ip) + udp + payload


def l4_verifies(frame: bytes) -> bool:
    """The receiver's check: one's complement sum over pseudo header + L4 is all ones."""
    if frame[12:14] == b"\x08\x00":
        ihl = (frame[14] & 0xF) * 4
        total = struct.unpack_from("!H", frame, 16)[0]
        l4 = frame[14 + ihl:14 + total]
        pseudo = frame[26:34] + struct.pack("!BBH", 0, frame[23], len(l4))
    else:
        l4 = frame[54:54 + struct.unpack_from("!H", frame, 18)[0]]
        pseudo = frame[22:54] + struct.pack("!I3xB", len(l4), frame[20])
    return (ol.ones_sum(pseudo) + ol.ones_sum(l4)) % 0xFFFF == 0


@given(st.binary(max_size=3000))
def test_fast_checksum_matches_rfc1071(data):
    assert ol.checksum(data) in (slow_checksum(data), (slow_checksum(data) or 0xFFFF))
    assert ol.checksum(data) == (slow_checksum(data) or 0xFFFF)


def test_finishing_a_partial_checksum():
    frame = udp_frame(b"hello weave" * 10)
    (done,) = ol.resolve(frame, vnet(ol.F_NEEDS_CSUM, 0, 0, 0, 34, 6))
    assert l4_verifies(done) and done[:40] == frame[:40] and done[42:] == frame[42:]
    assert not l4_verifies(frame)
    plain = ol.resolve(frame, ol.ZERO_VNET)
    assert plain == [frame]


@pytest.mark.parametrize("v6", [False, True])
def test_tcp_superframe_is_segmented_like_the_kernel_would(v6):
    payload = bytes(range(256)) * 23  # 5888 bytes: 4 full segments of 1448 and one of 96
    frame = tcp_frame(payload, v6=v6, flags=0x19)  # FIN|PSH|ACK on the superframe
    l4 = 14 + (40 if v6 else 20)
    gso = ol.GSO_TCPV6 if v6 else ol.GSO_TCPV4
    segs = ol.resolve(frame, vnet(ol.F_NEEDS_CSUM, gso, l4 + 20, 1448, l4, 16))
    assert [len(s) - l4 - 20 for s in segs] == [1448, 1448, 1448, 1448, 96]
    assert b"".join(s[l4 + 20:] for s in segs) == payload
    for i, s in enumerate(segs):
        assert s[:14] == frame[:14] and l4_verifies(s)
        assert struct.unpack_from("!I", s, l4 + 4)[0] == 1000 + 1448 * i
        assert s[l4 + 13] == (0x19 if i == 4 else 0x10)  # FIN and PSH only on the last
        if not v6:
            assert struct.unpack_from("!H", s, 18)[0] == 7 + i  # IP ids count up
            assert ol.checksum(s[14:34]) == 0xFFFF  # IP header checksum valid
            assert struct.unpack_from("!H", s, 16)[0] == len(s) - 14
        else:
            assert struct.unpack_from("!H", s, 18)[0] == len(s) - 54
    assert ol.segment_ip_len(frame, vnet(ol.F_NEEDS_CSUM, gso, l4 + 20, 1448, l4, 16)) == l4 - 14 + 20 + 1448


def test_udp_gso_segments_each_get_a_header():
    frame = udp_frame(bytes(3000))
    segs = ol.resolve(frame, vnet(ol.F_NEEDS_CSUM, ol.GSO_UDP_L4, 42, 1200, 34, 6))
    assert [struct.unpack_from("!H", s, 38)[0] for s in segs] == [1208, 1208, 608]
    assert all(l4_verifies(s) for s in segs)


def test_mark_round_trip():
    frame, hdr = tcp_frame(bytes(100)), vnet(ol.F_NEEDS_CSUM, 0, 0, 0, 34, 16)
    marked = ol.mark(frame, hdr)
    assert len(marked) == len(frame) + ol.MARK_OVERHEAD and marked[:12] == frame[:12] and ol.is_marked(marked)
    assert ol.unmark(marked) == (hdr, frame)
    assert not ol.is_marked(frame) and not ol.is_marked(marked[:20])
    assert ol.is_plain(ol.ZERO_VNET) and not ol.is_plain(hdr)


@pytest.mark.parametrize("hdr, frame", [
    (vnet(ol.F_NEEDS_CSUM, 0, 0, 0, 34, 200), udp_frame(b"x")),  # checksum field past the end
    (vnet(ol.F_NEEDS_CSUM, 0, 0, 0, 4, 0), udp_frame(b"x")),  # inside the Ethernet header
    (vnet(ol.F_NEEDS_CSUM, 3, 0, 1400, 34, 6), udp_frame(b"x")),  # legacy UFO: not ours
    (vnet(ol.F_NEEDS_CSUM, ol.GSO_TCPV4, 0, 0, 34, 16), tcp_frame(b"x")),  # gso_size 0
    (vnet(ol.F_NEEDS_CSUM, ol.GSO_TCPV4, 0, 1400, 34, 16), MAC_A + MAC_B + b"\x08\x06" + bytes(28)),  # ARP
])
def test_bad_headers_are_offload_errors(hdr, frame):
    with pytest.raises(ol.OffloadError):
        ol.resolve(frame, hdr)


@settings(max_examples=300)
@given(st.binary(min_size=10, max_size=10), st.binary(min_size=14, max_size=200))
def test_garbage_never_raises_anything_else(hdr, frame):
    try:
        out = ol.resolve(frame, hdr)
    except ol.OffloadError:
        return
    assert all(isinstance(f, bytes) for f in out)


@settings(max_examples=500)
@given(st.sampled_from([0, ol.GSO_TCPV4, ol.GSO_TCPV6, ol.GSO_UDP_L4, ol.GSO_TCPV4 | ol.GSO_ECN]),
       st.integers(0, 3000), st.integers(0, 120), st.integers(0, 40), st.sampled_from([b"\x08\x00", b"\x86\xdd"]),
       st.binary(max_size=400))
def test_plausible_but_broken_gso_frames_fail_cleanly(gso_type, gso_size, csum_start, csum_offset, ethertype, body):
    frame = MAC_A + MAC_B + ethertype + body
    hdr = vnet(ol.F_NEEDS_CSUM, gso_type, 0, gso_size, csum_start, csum_offset)
    try:
        out = ol.resolve(frame, hdr)
        ol.segment_ip_len(frame, hdr)
    except ol.OffloadError:
        return
    assert all(isinstance(f, bytes) and f[:14] == frame[:14] for f in out)
