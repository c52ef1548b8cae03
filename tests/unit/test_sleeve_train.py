"""Segment trains (services/datapath/sleeve/train.py): the sans-I/O cutter and
reassembler, the forwarder's OFFLOAD_TRAINS agreement, and real UDP GSO/GRO sockets on
loopback (udp.UdpTransport)."""
from __future__ import annotations

import os
import select
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.datapath.sleeve import train
from services.datapath.sleeve.forwarder import (OFFLOAD, OFFLOAD_REPLY, OFFLOAD_TAKES, OFFLOAD_TRAINS,
                                                PMTU_VERIFIED, Forwarder, MTUVerified, SendControl, SendPacket)
from services.datapath.sleeve.train import HEADER_LEN, Reassembler, TrainSender, is_segment
from services.datapath.udp import UdpTransport
from shared.weave.peer_name import PeerName

ADDR = ("192.168.77.2", 6783)
SEG = 1472


def wire(payload: bytes, seg: int = SEG, sender: TrainSender | None = None) -> list[bytes]:
    """What a train looks like as datagrams: each sendmsg's bytes cut at `seg`."""
    datagrams = []
    for iov in (sender or TrainSender()).sends(payload, seg):
        flat = b"".join(bytes(x) for x in iov)
        datagrams += [flat[i:i + seg] for i in range(0, len(flat), seg)]
    return datagrams


def feed_each(r: Reassembler, datagrams, sender=ADDR) -> list:
    out = []
    for d in datagrams:
        buf = memoryview(bytearray(d))
        out += [bytes(x) for x in r.feed(buf, len(d), 0, sender)]
    return out


def feed_gro(r: Reassembler, datagrams, seg: int = SEG, sender=ADDR) -> list:
    """As one GRO read: every datagram but the last exactly `seg` bytes."""
    joined = b"".join(datagrams)
    return [bytes(x) for x in r.feed(memoryview(bytearray(joined)), len(joined), seg, sender)]


# -- the cutter ---------------------------------------------------------------------------
def test_a_60k_payload_is_one_send_of_full_segments_then_a_short_one():
    payload = os.urandom(60_700)
    sends = TrainSender().sends(payload, SEG)
    assert len(sends) == 1
    segments = wire(payload)
    assert len(segments) == -(-len(payload) // (SEG - HEADER_LEN)) == 42
    assert all(len(s) == SEG for s in segments[:-1]) and len(segments[-1]) < SEG
    assert all(is_segment(s) for s in segments)
    assert [s[HEADER_LEN - 1] for s in segments] == list(range(42))
    assert b"".join(s[HEADER_LEN:] for s in segments) == payload


def test_small_payloads_and_impossible_sizes_are_no_train():
    sender = TrainSender()
    assert sender.sends(b"x" * SEG, SEG) is None  # fits one datagram
    assert sender.sends(b"x" * 5000, HEADER_LEN) is None  # no room for payload
    assert sender.sends(b"x" * (256 * 100), 100 + HEADER_LEN) is None  # > 255 segments
    assert sender.next_id == 0  # none of them used an id


def test_a_train_longer_than_one_send_is_split_into_several():
    payload = os.urandom(120_000)  # 83 segments, 44 per send
    sends = TrainSender().sends(payload, SEG)
    assert [len(iov) // 3 for iov in sends] == [44, 39]
    for iov in sends:
        assert sum(len(x) for x in iov) <= train.MAX_SEND_BYTES and len(iov) // 3 <= train.PER_SEND
    assert feed_each(Reassembler(), wire(payload)) == [payload]


def test_ids_increase_and_wrap():
    sender = TrainSender()
    sender.next_id = 0xFFFFFFFF
    a, b = wire(b"a" * 4000, sender=sender), wire(b"b" * 4000, sender=sender)
    assert a[0][8:12] == b"\xff\xff\xff\xff" and b[0][8:12] == bytes(4)


# -- the reassembler ------------------------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(extra=st.integers(1, 200_000), seg=st.sampled_from([576, 1400, 1472, 8972]))
def test_round_trip_one_datagram_per_read_and_gro(extra, seg):
    payload = os.urandom(min(seg + extra, 254 * (seg - HEADER_LEN)))
    datagrams = wire(payload, seg)
    assert feed_each(Reassembler(), datagrams) == [payload]
    r = Reassembler()
    assert feed_gro(r, datagrams, seg) == [payload]
    assert r.trains == 1 and not r.pending and not r.drops
    assert r.whole == 1  # one read held it all: taken whole


def test_one_gro_read_with_two_trains_and_a_read_cut_inside_a_train():
    sender = TrainSender()
    p1 = os.urandom(SEG * 3)  # its last segment is short
    p2 = os.urandom((SEG - HEADER_LEN) * 4)  # exactly 4 full segments
    p3 = os.urandom(9_000)
    d1, d2, d3 = wire(p1, sender=sender), wire(p2, sender=sender), wire(p3, sender=sender)
    r = Reassembler()
    assert feed_gro(r, d1) == [p1]
    assert feed_gro(r, d2 + d3[:3]) == [p2]  # p2 whole (fast path); p3 begun
    assert feed_gro(r, d3[3:]) == [p3]  # the rest of p3 completes it
    assert r.trains == 3 and r.whole == 2 and not r.pending and not r.drops


def test_sleeve_datagrams_pass_through_untouched_even_inside_a_gro_read():
    sleeve = [b"\xaa\x00\x00\x00\x00\x02" + bytes(SEG - 6)] * 2 + [b"\x00\x11\x22\x33\x44\x55 short"]
    r = Reassembler()
    assert feed_gro(r, sleeve) == sleeve
    assert feed_each(r, sleeve) == sleeve
    assert not r.drops and r.trains == 0


def test_out_of_order_segments_still_assemble_and_duplicates_are_counted():
    payload = os.urandom(10_000)
    datagrams = wire(payload)
    r = Reassembler()
    assert feed_each(r, [datagrams[3], datagrams[0], datagrams[0]] + datagrams[4:] + datagrams[1:3]) == [payload]
    assert r.drops["train_duplicate"] == 1


def test_a_gro_read_with_segments_swapped_is_not_taken_whole():
    """The fast path checks every index: a wrong order must not be joined as is."""
    payload = os.urandom(10_000)
    d = wire(payload)
    swapped = [d[0], d[2], d[1]] + d[3:]
    r = Reassembler()
    assert feed_gro(r, swapped) == [payload]  # assembled by index instead
    assert r.whole == 0


def test_lost_segment_loses_the_train_and_pending_trains_are_bounded():
    r = Reassembler(max_pending=4)
    sender = TrainSender()
    for _ in range(10):
        d = wire(os.urandom(5_000), sender=sender)
        assert feed_each(r, d[1:]) == []  # segment 0 lost
    assert len(r.pending) == 4 and r.drops["train_incomplete"] == 6


def test_trains_from_two_senders_with_the_same_id_do_not_mix():
    a, b = os.urandom(6_000), os.urandom(6_000)
    da, db = wire(a), wire(b)  # both id 0
    r = Reassembler()
    out = []
    for x, y in zip(da, db):
        out += feed_each(r, [x], sender=("10.0.0.1", 6783)) + feed_each(r, [y], sender=("10.0.0.2", 6783))
    assert sorted(out) == sorted([a, b])


@pytest.mark.parametrize("mangle", ["index_past_count", "count_zero"])
def test_bad_headers_are_dropped_and_counted(mangle):
    d = bytearray(wire(os.urandom(5_000))[1])
    if mangle == "index_past_count":
        d[HEADER_LEN - 1] = 200
    else:
        d[7] = 0
    r = Reassembler()
    assert feed_each(r, [bytes(d)]) == [] and r.drops["train_bad_index"] == 1 and not r.pending


# -- the forwarder agrees on trains ------------------------------------------------------------
H1, H2 = PeerName.parse("aa:00:00:00:00:01"), PeerName.parse("aa:00:00:00:00:02")


def verified_forwarder(trains: bool, peer_flags: int) -> Forwarder:
    f = Forwarder(H1, H2, 7, outbound=True, remote_addr=ADDR, offload=True, trains=trains)
    offer = [a for a in f.confirm(0.0) if isinstance(a, SendControl) and a.tag == OFFLOAD]
    assert offer[0].body == bytes([OFFLOAD_TAKES | (OFFLOAD_TRAINS if trains else 0)])
    f.control_message(OFFLOAD, bytes([peer_flags | OFFLOAD_REPLY]), 0.05)
    now, pending = 1.0, f.msg_too_big(1500, 1.0)
    while not any(isinstance(a, MTUVerified) for a in pending):  # every MTU test gets through
        sizes = [len(p.payload) for p in pending if isinstance(p, SendPacket) and p.df]
        now += 0.001
        pending = [a for _ in sizes for a in f.control_message(
            PMTU_VERIFIED, f.mtu_candidate.to_bytes(2, "big"), now)]
    return f


def test_trains_only_when_both_ends_read_them_and_the_pmtu_is_verified():
    f = verified_forwarder(trains=True, peer_flags=OFFLOAD_TAKES | OFFLOAD_TRAINS)
    assert f.train_seg == 1472 == f.max_payload
    packet = f.forward(H1, H2, os.urandom(60_000), df=False) or f.flush()[0]
    assert packet.train == 1472 and not packet.df
    assert f.forward(H1, H2, b"x" * 100, df=True) is None and f.flush()[-1].train == 0  # DF: never
    f.msg_too_big(1400, 2.0)  # a new search: no trains until it is verified again
    assert f.train_seg == 0
    assert verified_forwarder(trains=True, peer_flags=OFFLOAD_TAKES).train_seg == 0  # peer does not read them
    assert verified_forwarder(trains=False, peer_flags=OFFLOAD_TAKES | OFFLOAD_TRAINS).train_seg == 1472
    answer = Forwarder(H1, H2, 7, outbound=False, offload=True, trains=True)
    answer.confirm(0.0)
    reply = answer.control_message(OFFLOAD, bytes([OFFLOAD_TAKES]), 0.1)
    assert SendControl(H2, OFFLOAD, bytes([OFFLOAD_TAKES | OFFLOAD_TRAINS | OFFLOAD_REPLY])) in reply


# -- real sockets: UDP GSO out, GRO in ------------------------------------------------------------
def test_udp_gso_train_over_loopback_arrives_whole():
    rx, tx = UdpTransport("127.0.0.1", 0), UdpTransport("127.0.0.1", 0)
    try:
        assert rx.gro and tx.gro, "this kernel has UDP GSO/GRO (>= 5.0)"
        dst = rx.sock.getsockname()
        sender, r = TrainSender(), Reassembler()
        payloads = [os.urandom(n) for n in (60_700, 3_000, 120_000)]
        for p in payloads:
            assert tx.send_train(sender.sends(p, 1400), dst, 1400)
        buf = bytearray(65536)
        got, reads, gro_reads = [], 0, 0
        while len(got) < len(payloads) and select.select([rx.sock], [], [], 2)[0]:
            n, addr, seg = rx.recv_into(buf)
            reads += 1
            gro_reads += seg > 0
            got += [bytes(x) for x in r.feed(memoryview(buf), n, seg, addr)]
        assert got == payloads
        assert gro_reads and reads < 10  # the kernel kept trains together (not ~140 datagrams)
    finally:
        rx.close()
        tx.close()


def test_a_plain_datagram_still_reads_as_one_with_gro_on():
    rx = UdpTransport("127.0.0.1", 0)
    tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        tx.sendto(b"\xaa\x00\x00\x00\x00\x02hello", rx.sock.getsockname())
        select.select([rx.sock], [], [], 2)
        buf = bytearray(65536)
        n, _, seg = rx.recv_into(buf)
        assert (bytes(buf[:n]), seg) == (b"\xaa\x00\x00\x00\x00\x02hello", 0)
    finally:
        rx.close()
        tx.close()


@settings(max_examples=300, deadline=None)
@given(data=st.binary(min_size=1, max_size=3000), seg=st.sampled_from([0, 14, 100, 1472]),
       zero_head=st.booleans(), count=st.integers(0, 255), index=st.integers(0, 255))
def test_garbage_never_raises(data, seg, zero_head, count, index):
    """Whatever a peer (or anyone) sends to the sleeve port, the reassembler answers with
    datagrams, payloads or counted drops: it never raises."""
    if zero_head:  # looks like a train segment
        data = bytes(6) + bytes((train.VERSION, count)) + data[:4].ljust(4, b"\0") + bytes((index,)) + data[4:]
    r = Reassembler(max_pending=3)
    for _ in range(2):
        out = r.feed(memoryview(bytearray(data)), len(data), seg, ADDR)
        assert all(isinstance(x, (bytes, memoryview)) for x in out)
    assert len(r.pending) <= 3
