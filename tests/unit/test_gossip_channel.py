"""Gossip envelope, surrogate gossiper, pending-send merging and per-tag relaying."""
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.gossip.gossip_channel import (
    GOSSIP,
    GOSSIP_BROADCAST,
    GOSSIP_UNICAST,
    GossipChannels,
    GossipEnvelope,
    GossipSender,
    Send,
    decode_envelope,
    encode_envelope,
)
from services.gossip.peer import ConnectionSummary, LocalPeer, Peer, decode_peers, encode_peers
from shared.weave.peer_name import PeerName, PeerUID
from services.gossip.peers import Peers, TopologyGossiper
from services.gossip.routes import Routes
from services.gossip.surrogate_gossiper import SurrogateGossipData, SurrogateGossiper, fnv64a
from shared import gob
from shared.errors import LocalProtocolError, RemoteProtocolError
from tests.reference import capture

N = PeerName
GOLDEN = "0d0c000a6e616d65736572766572090600fa0a0b0c0d0e0f040a0001aa"


# --- envelope -------------------------------------------------------------------------


def test_envelope_golden_vector():
    assert encode_envelope("nameserver", N(0x0A0B0C0D0E0F), b"\xaa").hex() == GOLDEN
    env = decode_envelope(GOSSIP, bytes.fromhex(GOLDEN))
    assert env == GossipEnvelope("nameserver", N(0x0A0B0C0D0E0F), None, b"\xaa")
    assert decode_envelope(GOSSIP_BROADCAST, bytes.fromhex(GOLDEN)) == env


def test_unicast_envelope_carries_destination():
    body = encode_envelope("IPallocation", N(1), b"xy", dst=N(2))
    assert body.hex() == "0f0c000c4950616c6c6f636174696f6e" + "03060001" + "03060002" + "050a00027879"
    assert decode_envelope(GOSSIP_UNICAST, body) == GossipEnvelope("IPallocation", N(1), N(2), b"xy")


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=20), st.integers(0, (1 << 48) - 1), st.one_of(st.none(), st.integers(0, (1 << 48) - 1)),
       st.binary(max_size=64))
def test_envelope_round_trip(channel, src, dst, payload):
    tag = GOSSIP if dst is None else GOSSIP_UNICAST
    body = encode_envelope(channel, N(src), payload, None if dst is None else N(dst))
    assert decode_envelope(tag, body) == GossipEnvelope(channel, N(src), None if dst is None else N(dst), payload)


@pytest.mark.parametrize("body", [
    b"",
    bytes.fromhex(GOLDEN)[:-1],  # payload cut short
    bytes.fromhex(GOLDEN)[:12],  # no source
    gob.encode(gob.UINT, 5) + gob.encode(gob.UINT, 1),  # channel is not a string
    gob.encode(gob.STRING, "x") + gob.encode(gob.UINT, 1 << 50) + gob.encode(gob.BYTES, b""),
])
def test_bad_envelopes_are_remote_errors(body):
    with pytest.raises(RemoteProtocolError):
        decode_envelope(GOSSIP, body)


def test_non_gossip_tag_is_our_bug():
    with pytest.raises(LocalProtocolError):
        decode_envelope(7, bytes.fromhex(GOLDEN))


def test_every_captured_gossip_envelope_decodes():
    msgs = [m for m in capture("mesh-ipam")["tcp_messages"] if m.get("tag") in (4, 5, 6)]
    assert len(msgs) == 58
    for m in msgs:
        body = bytes.fromhex(m["hex"])
        env = decode_envelope(body[0], body[1:])
        assert (env.channel, str(env.src), len(env.payload)) == (m["channel"], m["src_peer"], m["gossip_payload_len"])
        assert (None if env.dst is None else str(env.dst)) == m.get("dst_peer")
        assert encode_envelope(env.channel, env.src, env.payload, env.dst) == body[1:]


# --- surrogate --------------------------------------------------------------------------


@pytest.mark.parametrize("data,digest", [
    (b"", 0xCBF29CE484222325), (b"a", 0xAF63DC4C8601EC8C), (b"foobar", 0x85944171F73967E8),
])
def test_fnv64a_vectors(data, digest):
    assert fnv64a(data) == digest


def test_surrogate_dedupes_gossip_within_interval():
    s = SurrogateGossiper(gossip_interval=30.0)
    assert s.on_gossip(b"one", 0.0) == SurrogateGossipData((b"one",))
    assert s.on_gossip(b"one", 10.0) is None
    assert s.on_gossip(b"two", 10.0) == SurrogateGossipData((b"two",))
    # still remembered past the interval until something new prunes it (as mesh)
    assert s.on_gossip(b"one", 45.0) is None
    assert s.on_gossip(b"three", 45.0) is not None  # prunes "one" (t=0) and "two" (t=10)
    assert s.remembered() == 1
    assert s.on_gossip(b"one", 46.0) is not None
    assert s.on_gossip(b"two", 46.0) is not None


def test_surrogate_ignores_unicast_relays_broadcast_has_no_state():
    s = SurrogateGossiper()
    assert s.on_gossip_unicast(N(1), b"x", 0.0) is None
    assert s.on_gossip_broadcast(N(1), b"x", 0.0) == SurrogateGossipData((b"x",))
    assert s.on_gossip_broadcast(N(1), b"x", 0.0) == SurrogateGossipData((b"x",))  # no dedupe
    assert s.gossip(0.0) is None


def test_surrogate_data_merge():
    a, b = SurrogateGossipData((b"1", b"2")), SurrogateGossipData((b"2", b"3"))
    assert a.merge(b).encode() == [b"1", b"2", b"3"]
    assert a.merge(a) == a
    assert a.merge(b).merge(b) == a.merge(b)


# --- pending sends ----------------------------------------------------------------------


def test_sender_merges_pending_data_gossip_first():
    sender = GossipSender()
    assert sender.empty()
    sender.broadcast("dns", N(7), SurrogateGossipData((b"b1",)))
    sender.send("dns", SurrogateGossipData((b"g1",)))
    sender.send("dns", SurrogateGossipData((b"g2",)))
    sender.broadcast("dns", N(7), SurrogateGossipData((b"b2",)))
    sender.broadcast("dns", N(8), SurrogateGossipData((b"c1",)))
    out = sender.take(N(1))
    assert [(tag, decode_envelope(tag, body)) for tag, body in out] == [
        (GOSSIP, GossipEnvelope("dns", N(1), None, b"g1")),
        (GOSSIP, GossipEnvelope("dns", N(1), None, b"g2")),
        (GOSSIP_BROADCAST, GossipEnvelope("dns", N(7), None, b"b1")),
        (GOSSIP_BROADCAST, GossipEnvelope("dns", N(7), None, b"b2")),
        (GOSSIP_BROADCAST, GossipEnvelope("dns", N(8), None, b"c1")),
    ]
    assert sender.empty() and sender.take(N(1)) == []


# --- relaying ---------------------------------------------------------------------------


class Recorder:
    """A channel owner that records what reaches it and passes broadcasts on."""

    def __init__(self):
        self.unicasts, self.broadcasts, self.gossips = [], [], []

    def on_gossip_unicast(self, src, payload, now):
        self.unicasts.append((src, payload))

    def on_gossip_broadcast(self, src, payload, now):
        self.broadcasts.append((src, payload))
        return SurrogateGossipData((payload,))

    def gossip(self, now):
        return SurrogateGossipData((b"everything",))

    def on_gossip(self, payload, now):
        self.gossips.append(payload)
        return None if payload == b"old" else SurrogateGossipData((payload,))


def node(me, edges, n=4):
    """`me`'s view of peers 1..n with symmetric established `edges`."""
    records = {i: Peer(N(i), f"p{i}", PeerUID(i), 1, i, True) for i in range(1, n + 1)}
    records[me] = LocalPeer(N(me), f"p{me}", PeerUID(me), 1, me, True)
    for a, b in edges:
        records[a].connections[N(b)] = ConnectionSummary(N(b), f"10.0.0.{b}:6783", True, True)
        records[b].connections[N(a)] = ConnectionSummary(N(a), f"10.0.0.{a}:6783", False, True)
    peers = Peers(records[me], random.Random(me))
    peers.by_name.update({N(i): p for i, p in records.items()})
    routes = Routes(peers)
    routes.request_recalculate()
    channels = GossipChannels(peers, routes, random.Random(me))
    recorder = Recorder()
    channels.register("test", recorder)
    return channels, recorder, peers


LINE = [(1, 2), (2, 3), (3, 4)]


def test_unicast_relayed_unchanged_to_next_hop_then_delivered():
    at2, rec2, _ = node(2, LINE)
    body = encode_envelope("test", N(1), b"hi", dst=N(4))
    assert at2.handle(GOSSIP_UNICAST, body, 0.0) == [Send(N(3), GOSSIP_UNICAST, body)]
    assert rec2.unicasts == [] and at2.flush() == []
    at4, rec4, _ = node(4, LINE)
    assert at4.handle(GOSSIP_UNICAST, body, 0.0) == []
    assert rec4.unicasts == [(N(1), b"hi")]


def test_unicast_to_unreachable_peer_is_dropped():
    at2, _, _ = node(2, [(1, 2)])
    assert at2.handle(GOSSIP_UNICAST, encode_envelope("test", N(1), b"x", dst=N(9)), 0.0) == []
    assert at2.gossip_unicast("test", N(4), b"x") == []
    at1, _, _ = node(1, LINE)
    [send] = at1.gossip_unicast("test", N(4), b"x")
    assert send.to == N(2) and send.message[0] == GOSSIP_UNICAST
    assert decode_envelope(GOSSIP_UNICAST, send.body) == GossipEnvelope("test", N(1), N(4), b"x")


def test_broadcast_forwarded_along_broadcast_all_with_original_source():
    at2, rec2, _ = node(2, LINE)
    at2.handle(GOSSIP_BROADCAST, encode_envelope("test", N(1), b"b"), 0.0)
    assert rec2.broadcasts == [(N(1), b"b")]
    sends = at2.flush()
    assert [(s.to, s.tag, decode_envelope(s.tag, s.body)) for s in sends] == [
        (N(3), GOSSIP_BROADCAST, GossipEnvelope("test", N(1), None, b"b"))]
    at4, rec4, _ = node(4, LINE)
    at4.handle(GOSSIP_BROADCAST, encode_envelope("test", N(1), b"b"), 0.0)
    assert rec4.broadcasts == [(N(1), b"b")] and at4.flush() == []


def test_gossip_relayed_to_random_neighbours_except_sender_as_us():
    star = [(1, 2), (1, 3), (1, 4)]
    at1, rec1, _ = node(1, star)
    at1.handle(GOSSIP, encode_envelope("test", N(2), b"new"), 0.0)
    sends = at1.flush()
    assert sorted(s.to for s in sends) == [N(3), N(4)]
    assert all(decode_envelope(GOSSIP, s.body) == GossipEnvelope("test", N(1), None, b"new") for s in sends)
    at1.handle(GOSSIP, encode_envelope("test", N(2), b"old"), 0.0)  # nothing new: not relayed
    assert at1.flush() == [] and rec1.gossips == [b"new", b"old"]


def test_unknown_channel_gets_a_surrogate_that_relays():
    at2, _, _ = node(2, LINE)
    at2.handle(GOSSIP, encode_envelope("IPallocation", N(1), b"ring"), 0.0)
    assert isinstance(at2.gossiper("IPallocation"), SurrogateGossiper)
    [send] = at2.flush()
    assert (send.to, decode_envelope(GOSSIP, send.body).payload) == (N(3), b"ring")
    at2.handle(GOSSIP, encode_envelope("IPallocation", N(1), b"ring"), 1.0)  # duplicate
    assert at2.flush() == []
    assert at2.handle(GOSSIP_UNICAST, encode_envelope("IPallocation", N(1), b"u", dst=N(2)), 1.0) == []


def test_pending_gossip_to_one_connection_is_merged_not_queued():
    at1, _, _ = node(1, [(1, 2)])
    at1.gossip_neighbour_subset("test", SurrogateGossipData((b"a",)))
    at1.gossip_neighbour_subset("test", SurrogateGossipData((b"b",)))
    at1.gossip_neighbour_subset("test", SurrogateGossipData((b"a",)))
    assert at1.pending_peers() == [N(2)]
    assert [decode_envelope(s.tag, s.body).payload for s in at1.take(N(2))] == [b"a", b"b"]
    assert at1.pending_peers() == []


def test_periodic_and_new_connection_gossip():
    at1, _, peers = node(1, [(1, 2), (1, 3)])
    at1.send_all_gossip(0.0)
    assert sorted(s.to for s in at1.flush()) == [N(2), N(3)]
    at1.send_all_gossip_down(N(3), 0.0)
    [send] = at1.flush()
    assert send.to == N(3) and decode_envelope(GOSSIP, send.body).payload == b"everything"
    at1.send_all_gossip_down(N(2), 0.0)
    del peers.ourself.connections[N(2)]  # connection gone before the drain
    assert at1.flush() == []


def test_duplicate_channel_registration_is_our_bug():
    at1, _, _ = node(1, [])
    with pytest.raises(LocalProtocolError):
        at1.register("test", Recorder())


def test_topology_channel_applies_and_regossips_improvements():
    us = LocalPeer(N(1), "p1", PeerUID(1), 0, 1, True)
    peers = Peers(us, random.Random(0))
    us.add_connection(ConnectionSummary(N(2), "10.0.0.2:6783", True, True))
    peers.fetch_with_default(Peer(N(2), "p2", PeerUID(2), 0, 2, True))
    us.add_connection(ConnectionSummary(N(3), "10.0.0.3:6783", True, True))
    peers.fetch_with_default(Peer(N(3), "p3", PeerUID(3), 0, 3, True))
    routes = Routes(peers)
    changes = []
    topology = TopologyGossiper(peers, routes, changes.append)
    channels = GossipChannels(peers, routes, random.Random(0))
    channels.register("topology", topology)
    p2 = Peer(N(2), "p2", PeerUID(2), 3, 2, True, {
        N(1): ConnectionSummary(N(1), "10.0.0.1:6783", False, True),
        N(4): ConnectionSummary(N(4), "10.0.0.4:6783", True, True)})
    channels.handle(GOSSIP, encode_envelope("topology", N(2), encode_peers([p2])), 0.0)
    assert changes[-1].improved == {N(2)} and not routes.stale  # recalculated for the relay
    assert routes.unicast_all(N(4)) == N(2)
    [send] = channels.flush()
    assert send.to == N(3)
    assert [p.version for p, _ in decode_peers(decode_envelope(GOSSIP, send.body).payload)] == [3]
    channels.handle(GOSSIP, encode_envelope("topology", N(3), encode_peers([p2])), 0.0)
    assert channels.flush() == [] and len(changes) == 1  # nothing new
    with pytest.raises(RemoteProtocolError):
        channels.handle(GOSSIP_UNICAST, encode_envelope("topology", N(2), b"", dst=N(1)), 0.0)
    with pytest.raises(RemoteProtocolError):
        channels.handle(GOSSIP, encode_envelope("topology", N(2), b"\x01\x02"), 0.0)
