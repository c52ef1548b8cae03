"""Forwarding decisions on a line of three peers, MTU fit, ICMP frag-needed bytes."""
from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.datapath.sleeve import ethernet_decoder as eth
from services.datapath.sleeve.frame_router import Decision, Fit, Hop, FrameRouter, fit_frame

A, B, C = 0xAA0000000001, 0xAA0000000002, 0xAA0000000003
MAC_A = bytes.fromhex("967220c75315")  # a container behind A
MAC_C = bytes.fromhex("72dcad57524b")  # a container behind C
BROADCAST = b"\xff" * 6


class LineRoutes:
    """Routes of the established line A - B - C, seen from one peer."""

    TABLES = {
        A: ({B: B, C: B}, {A: [B], B: [], C: []}),
        B: ({A: A, C: C}, {A: [C], B: [A, C], C: [A]}),
        C: ({A: B, B: B}, {A: [], B: [], C: [B]}),
    }

    def __init__(self, me: int) -> None:
        self._unicast, self._broadcast = self.TABLES[me]

    def unicast(self, name: int) -> int | None:
        return self._unicast.get(name)

    def broadcast(self, source: int) -> list[int]:
        return list(self._broadcast.get(source, []))


def ones_complement_sum_ok(data: bytes) -> bool:
    """Independent check: a correct Internet checksum makes the 16-bit sum 0xffff."""
    if len(data) % 2:
        data += b"\x00"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total == 0xFFFF


def ipv4_frame(dst_mac, src_mac, payload: bytes, df: bool, src_ip="10.32.0.1", dst_ip="10.40.0.0",
               proto=6, tos=0, ident=0x1234) -> bytes:
    header = bytearray(struct.pack(
        "!BBHHHBBH4s4s", 0x45, tos, 20 + len(payload), ident, 0x4000 if df else 0, 64, proto, 0,
        bytes(map(int, src_ip.split("."))), bytes(map(int, dst_ip.split("."))),
    ))
    total = sum(struct.unpack("!10H", header))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    struct.pack_into("!H", header, 10, ~total & 0xFFFF)
    return dst_mac + src_mac + b"\x08\x00" + bytes(header) + payload


ARP = BROADCAST + MAC_A + b"\x08\x06" + bytes(28)


def routers():
    return {p: FrameRouter(p, LineRoutes(p)) for p in (A, B, C)}


def test_broadcast_floods_along_the_line_and_learns_macs():
    r = routers()
    d = r[A].captured(ARP, 0.0)
    assert d == Decision(False, [Hop(B, A, B)], True)
    d = r[B].forwarded(A, B, ARP, 0.0)
    assert d == Decision(True, [Hop(C, A, C)], True)
    d = r[C].forwarded(A, C, ARP, 0.0)
    assert d == Decision(True, [], True)
    assert r[A].macs.lookup(MAC_A) == A
    assert r[B].macs.lookup(MAC_A) == A and r[C].macs.lookup(MAC_A) == A


def test_unicast_reply_is_relayed_by_the_middle_peer():
    r = routers()
    for peer, src in ((A, None), (B, A), (C, A)):
        r[peer].captured(ARP, 0.0) if src is None else r[peer].forwarded(src, peer, ARP, 0.0)
    reply = MAC_A + MAC_C + b"\x08\x06" + bytes(28)
    assert r[C].captured(reply, 1.0) == Decision(False, [Hop(B, C, A)], False)
    assert r[B].forwarded(C, A, reply, 1.0) == Decision(False, [Hop(A, C, A)], False)
    assert r[B].macs.lookup(MAC_C) is None  # relays learn nothing
    assert r[A].forwarded(C, A, reply, 1.0) == Decision(True, [], False)  # dst MAC is local
    assert r[A].macs.lookup(MAC_C) == C


def test_broadcast_fan_out_from_the_middle():
    r = routers()
    frame = b"\x33\x33\x00\x00\x00\x16" + bytes.fromhex("aa0000000002") + b"\x86\xdd" + bytes(50)
    assert r[B].captured(frame, 0.0) == Decision(False, [Hop(A, B, A), Hop(C, B, C)], True)


@pytest.mark.parametrize("frame, reason", [
    (bytes.fromhex("0180c2000000") + MAC_A + bytes(40), "stp"),
    (MAC_A + MAC_A + bytes(40), "local_destination"),
    (b"\x00" * 10, "short_frame"),
])
def test_captured_drops(frame, reason):
    r = FrameRouter(A, LineRoutes(A))
    r.captured(ARP, 0.0)
    assert r.captured(frame, 1.0) == Decision(False, [], False)
    assert r.drops == {reason: 1}


def test_looped_frame_and_moved_mac():
    r = FrameRouter(A, LineRoutes(A))
    r.forwarded(C, A, MAC_A + MAC_C + b"\x08\x06" + bytes(28), 0.0)
    looped = BROADCAST + MAC_C + b"\x08\x06" + bytes(28)
    assert r.captured(looped, 1.0).hops == [] and r.drops == {"looped": 1}
    r.forwarded(B, A, looped, 2.0)  # MAC_C now appears behind B
    assert r.macs.lookup(MAC_C) == B and r.mac_moves == 1


def test_unreachable_destination_and_no_broadcast_hops():
    r = FrameRouter(C, LineRoutes(C))
    assert r.forwarded(A, 0xAA0000000009, ARP, 0.0).hops == []
    r2 = FrameRouter(A, type("NoRoutes", (), {"unicast": lambda s, n: None, "broadcast": lambda s, n: []})())
    assert r2.captured(ARP, 0.0) == Decision(False, [], False)
    assert r.drops == {"unknown_destination": 1} and r2.drops == {"no_broadcast_route": 1}


# ---- MTU fit -------------------------------------------------------------------------

def test_fit_small_frames_and_channels():
    df = ipv4_frame(MAC_C, MAC_A, bytes(100), df=True)
    plain = ipv4_frame(MAC_C, MAC_A, bytes(100), df=False)
    assert fit_frame(df, 1438, False, False) == Fit(True, (df,))
    assert fit_frame(plain, 1438, False, False) == Fit(True, (plain,))  # stack not trusted yet
    assert fit_frame(plain, 1438, True, False) == Fit(False, (plain,))
    assert fit_frame(ARP, 1438, False, False) == Fit(False, (ARP,))  # not IP: never DF
    exact = ipv4_frame(MAC_C, MAC_A, bytes(1438 - 20), df=True)
    assert fit_frame(exact, 1438, False, False) == Fit(True, (exact,))


def test_df_too_big_broadcast_is_dropped():
    big = ipv4_frame(BROADCAST, MAC_A, bytes(1500), df=True)
    assert fit_frame(big, 1438, False, True) == Fit(True, (), drop="df_too_big_broadcast")


def test_icmp_frag_needed_bytes():
    payload = bytes(range(256)) * 6
    original = ipv4_frame(MAC_C, MAC_A, payload, df=True, tos=0x10)
    fit = fit_frame(original, 1438, False, False)
    assert fit.frames == () and fit.drop is None
    icmp = fit.icmp
    assert icmp[0:6] == MAC_A and icmp[6:12] == MAC_C and icmp[12:14] == b"\x08\x00"
    ip = icmp[14:34]
    assert ip[0] == 0x45 and ip[1] == 0x10
    assert struct.unpack("!HHHBB", ip[2:10]) == (20 + 8 + 28, 0, 0, 64, 1)
    assert ip[12:16] == bytes([10, 40, 0, 0]) and ip[16:20] == bytes([10, 32, 0, 1])
    assert ones_complement_sum_ok(ip)
    body = icmp[34:]
    assert body[0:2] == b"\x03\x04" and body[4:6] == b"\x00\x00"
    assert int.from_bytes(body[6:8], "big") == 1438
    assert body[8:] == original[14:14 + 28]  # original IP header + 8 bytes
    assert ones_complement_sum_ok(body)
    assert len(icmp) == 14 + 20 + 8 + 28
    assert not eth.is_df(icmp)  # so answering it can never recurse


def test_non_df_too_big_is_fragmented_when_the_stack_is_not_trusted():
    payload = bytes(i % 251 for i in range(3000))
    original = ipv4_frame(MAC_C, MAC_A, payload, df=False, proto=17)
    fit = fit_frame(original, 1438, False, False)
    assert fit.df and len(fit.frames) == 3
    assert fit_frame(original, 1438, True, False) == Fit(False, (original,))
    assert reassemble(fit.frames, 1438) == payload


def reassemble(frames, mtu: int) -> bytes:
    data = bytearray()
    for i, f in enumerate(frames):
        ip = f[14:]
        length, flags_frag = struct.unpack("!H2xH", ip[2:8])
        assert ones_complement_sum_ok(ip[:20]) and length <= mtu
        assert flags_frag & 0x1FFF == len(data) // 8
        more = bool(flags_frag & 0x2000)
        assert more == (i < len(frames) - 1)
        if more:
            assert (length - 20) % 8 == 0
        data += ip[20:length]
        assert f[:14] == frames[0][:14]
    return bytes(data)


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 8000), st.integers(68, 1500))
def test_fragments_reassemble(size, mtu):
    payload = bytes(i % 253 for i in range(size))
    original = ipv4_frame(MAC_C, MAC_A, payload, df=False)
    fit = fit_frame(original, mtu, False, False)
    assert fit.df and fit.drop is None
    assert all(len(f) <= max(mtu + 14, eth.MIN_FRAME) for f in fit.frames)
    assert reassemble(fit.frames, mtu) == payload


def test_mtu_too_small_to_fragment():
    original = ipv4_frame(MAC_C, MAC_A, bytes(100), df=False)
    assert fit_frame(original, 26, False, False) == Fit(True, (), drop="mtu_too_small")


@pytest.mark.parametrize("frame, want", [
    (ipv4_frame(MAC_C, MAC_A, b"", df=True), True),
    (ipv4_frame(MAC_C, MAC_A, b"", df=True)[:33], False),  # header cut short
    (MAC_C + MAC_A + b"\x81\x00" + ipv4_frame(MAC_C, MAC_A, b"", df=True)[12:], False),  # VLAN
    (MAC_C + MAC_A + b"\x08\x00" + b"\x44" + bytes(19), False),  # IHL 4
])
def test_df_detection_follows_the_decoder(frame, want):
    assert eth.is_df(frame) is want
