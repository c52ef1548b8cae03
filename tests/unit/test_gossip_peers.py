"""Topology records: version rules, merge table, placeholders, GC, short IDs, codec,
and the topology payloads of a real Weave Net 2.8 capture."""
import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.gossip.gossip_channel import decode_envelope
from services.gossip.peer import (
    CONNECTION_SUMMARIES,
    PEER_SUMMARY,
    ConnectionSummary,
    LocalPeer,
    Peer,
    TieBreak,
    break_tie,
    decode_peers,
    encode_peers,
)
from shared.weave.peer_name import PeerName, PeerUID
from services.gossip.peers import SHORT_ID_SPACE, Peers, TopologyGossipData
from shared import gob
from shared.errors import LocalProtocolError, RemoteProtocolError
from tests.reference import capture, reference_dir

N = PeerName
US = N(0x10)


def conn(to, addr="10.0.0.9:6783", outbound=True, established=True):
    return ConnectionSummary(N(to), addr, outbound, established)


def rec(name, version=1, uid=100, short_id=7, has_short_id=True, conns=(), nick=None):
    peer = Peer(N(name), nick or f"p{name:x}", PeerUID(uid), version, short_id, has_short_id)
    return peer, [conn(c) if isinstance(c, int) else c for c in conns]


def make_peers(*connected, short_id=1000, seed=0):
    """Our topology with local connections to `connected` (so they are never GC'd),
    whose records start as placeholders."""
    ourself = LocalPeer(US, "us", PeerUID(5), 0, short_id, True)
    peers = Peers(ourself, random.Random(seed))
    for name in connected:
        ourself.add_connection(conn(name))
        peers.fetch_with_default(Peer.placeholder(N(name)))
    return peers


def state(peers):
    return {
        p.name: (p.version, int(p.uid), p.has_short_id, p.short_id, p.nickname,
                 sorted(p.connections.values(), key=lambda c: c.remote_name))
        for p in peers
    }


# --- local peer version rules -----------------------------------------------------


def test_local_version_bumps():
    us = LocalPeer(US, "us", PeerUID(5), 0, 1, True)
    us.add_connection(conn(2, established=False))
    assert us.version == 1
    assert us.connection_established(N(2)) and us.version == 2
    assert us.connections[N(2)].established
    assert not us.connection_established(N(3)) and us.version == 2
    us.set_short_id(9)
    assert (us.version, us.short_id) == (3, 9)
    assert us.delete_connection(N(2)) and us.version == 4
    assert not us.delete_connection(N(2)) and us.version == 4
    assert not us.set_version_beyond(3) and us.version == 4
    assert us.set_version_beyond(4) and us.version == 5
    assert us.set_version_beyond(41) and us.version == 42


def test_local_peer_refuses_duplicate_and_self_connections():
    us = LocalPeer(US, "us", PeerUID(5), 0, 1, True)
    us.add_connection(conn(2))
    with pytest.raises(LocalProtocolError):
        us.add_connection(conn(2))
    with pytest.raises(LocalProtocolError):
        us.add_connection(ConnectionSummary(US, "x:1", True, False))
    assert us.version == 1
    assert not us.connection_limit_reached(0)
    assert us.connection_limit_reached(1) and not us.connection_limit_reached(2)


@pytest.mark.parametrize("new,old,result", [
    (1, 2, TieBreak.WON), (2, 1, TieBreak.LOST), (7, 7, TieBreak.TIED),
])
def test_break_tie(new, old, result):
    assert break_tie(new, old) is result


# --- merge --------------------------------------------------------------------------

EXISTING = dict(version=5, uid=100, has_short_id=True)


@pytest.mark.parametrize("existing,incoming,replaced", [
    (EXISTING, dict(version=6, uid=1, has_short_id=False), True),  # newer version wins
    (EXISTING, dict(version=4, uid=999, has_short_id=True), False),  # older loses
    (EXISTING, dict(version=5, uid=101, has_short_id=False), True),  # equal: higher UID
    (EXISTING, dict(version=5, uid=99, has_short_id=True), False),  # equal: lower UID
    (EXISTING, dict(version=5, uid=100, has_short_id=False), False),  # no short ID < has
    (dict(EXISTING, has_short_id=False), dict(version=5, uid=100, has_short_id=True), True),
    (EXISTING, dict(EXISTING), False),  # the same record: nothing new
])
def test_merge_rule(existing, incoming, replaced):
    peers = make_peers(2)
    peers.apply_decoded([rec(2, nick="old", conns=[US], **existing)])
    change = peers.apply_decoded([rec(2, nick="new", conns=[US, 3], **incoming)])
    peer = peers.fetch(N(2))
    assert change.received == {N(2)}
    assert change.improved == ({N(2)} if replaced else set())
    assert peer.nickname == ("new" if replaced else "old")
    assert peer.precedence() == tuple((incoming if replaced else existing)[k]
                                      for k in ("version", "uid", "has_short_id"))
    assert (N(3) in peers) == replaced


def test_unknown_peers_added_and_placeholders_for_referenced_names():
    peers = make_peers(2)
    change = peers.apply_decoded([rec(2, conns=[US, 3, 4]), rec(4, conns=[2])])
    assert change.improved == {N(2), N(4)}
    placeholder = peers.fetch(N(3))
    assert (placeholder.uid, placeholder.version, placeholder.has_short_id) == (0, 0, False)
    assert placeholder.connections == {}
    # a real record for the placeholder replaces it, even at version 0
    change = peers.apply_decoded([rec(3, version=0, uid=8, conns=[2])])
    assert change.improved == {N(3)} and peers.fetch(N(3)).uid == 8
    assert peers.fetch(N(3)) is placeholder  # updated in place


def test_record_of_our_name_with_other_uid_bumps_our_version():
    peers = make_peers(2)
    assert peers.ourself.version == 1
    change = peers.apply_decoded([rec(US, version=9, uid=77)])
    assert change.local_modified and change.improved == set()
    assert peers.ourself.version == 10 and peers.ourself.uid == 5
    change = peers.apply_decoded([rec(US, version=3, uid=77)])
    assert not change.local_modified and peers.ourself.version == 10
    change = peers.apply_decoded([rec(US, version=50, uid=5)])  # our own UID: ignored
    assert not change.local_modified and peers.ourself.version == 10


def test_bad_payload_changes_nothing():
    peers = make_peers(2)
    peers.apply_decoded([rec(2, conns=[US])])
    before = state(peers)
    good = encode_peers([rec(3)[0]])
    for bad in (b"\x05garbage", good[:-3], b"\xff" * 4):
        with pytest.raises(RemoteProtocolError):
            peers.apply_update(bad)
    assert state(peers) == before


def test_short_name_byte_is_remote_error():
    bad = Peer(N(2), "x")
    payload = encode_peers([bad]).replace(bytes.fromhex("0106000000000002"), bytes.fromhex("0105000000000002"))
    with pytest.raises(RemoteProtocolError):
        decode_peers(payload)


# --- garbage collection ---------------------------------------------------------------


def test_gc_drops_unreachable_unreferenced_peers():
    peers = make_peers(2)
    peers.apply_decoded([rec(2, conns=[US, 3]), rec(3, uid=3, conns=[2, 4]), rec(4, uid=4, conns=[3])])
    assert peers.names() == {US, N(2), N(3), N(4)}
    assert peers.fetch_and_add_ref(N(4)) is not None  # a connection in progress to 4
    change = peers.apply_decoded([rec(2, version=2, conns=[US])])  # 2 drops 3
    assert [p.name for p in change.removed] == [N(3)]
    assert change.improved == {N(2)}
    assert peers.names() == {US, N(2), N(4)}
    peers.dereference(N(4))
    assert [p.name for p in peers.garbage_collect().removed] == [N(4)]
    with pytest.raises(LocalProtocolError):
        peers.dereference(N(4))


def test_gc_never_drops_ourself_and_removed_names_leave_improved():
    peers = make_peers()
    change = peers.apply_decoded([rec(7, conns=[8])])  # nobody reaches 7 from us
    assert {p.name for p in change.removed} == {N(7), N(8)}
    assert change.improved == set() and peers.names() == {US}


# --- short IDs ------------------------------------------------------------------------


def test_short_id_collision_lowest_name_keeps_it():
    peers = make_peers(2, 0x20, short_id=100)
    v = peers.ourself.version
    change = peers.apply_decoded([rec(0x20, short_id=100, conns=[US])])  # higher name
    assert not change.local_modified and peers.fetch_by_short_id(100) is peers.ourself
    change = peers.apply_decoded([rec(2, short_id=100, conns=[US])])  # lower name wins
    assert change.local_modified and change.short_ids_invalidated
    assert peers.fetch_by_short_id(100) is peers.fetch(N(2))
    assert peers.ourself.short_id != 100 and peers.ourself.version == v + 1
    assert peers.fetch_by_short_id(peers.ourself.short_id) is peers.ourself


def test_short_id_released_on_gc_goes_to_next_lowest():
    peers = make_peers(0x30, short_id=100)
    peers.apply_decoded([rec(0x30, short_id=200, conns=[US, 0x40]), rec(0x40, uid=4, short_id=200, conns=[0x30, 0x50]),
                         rec(0x50, uid=5, short_id=200, conns=[0x40])])
    assert peers.fetch_by_short_id(200).name == N(0x30)
    peers.apply_decoded([rec(0x30, version=2, short_id=300, conns=[US, 0x40])])
    assert peers.fetch_by_short_id(200).name == N(0x40)
    peers.apply_decoded([rec(0x30, version=3, short_id=300, conns=[US])])  # GC 0x40, 0x50
    assert peers.fetch_by_short_id(200) is None and peers.fetch_by_short_id(300).name == N(0x30)


def fill_short_ids(peers, free):
    for sid in range(SHORT_ID_SPACE):
        if sid not in free and sid != peers.ourself.short_id:
            peers.fetch_with_default(Peer(N(0x1000 + sid), "", PeerUID(1), 0, sid, True))


def test_choose_short_id_scans_when_random_tries_fail():
    peers = make_peers(short_id=0)
    fill_short_ids(peers, free={1234})
    assert peers.choose_short_id() == 1234
    peers.fetch_with_default(Peer(N(0x9999), "", PeerUID(1), 0, 1234, True))
    assert peers.choose_short_id() is None


def test_short_id_bumped_by_new_connection_peer():
    peers = make_peers(short_id=55)
    peer, change = peers.fetch_with_default(Peer(N(1), "low", PeerUID(9), 0, 55, True))
    assert change.local_modified and peers.ourself.short_id != 55
    assert peers.ref_count(N(1)) == 1
    again, change = peers.fetch_with_default(Peer(N(1), "dup", PeerUID(3), 0, 1, True))
    assert again is peer and again.nickname == "low" and not change.local_modified
    assert peers.ref_count(N(1)) == 2


# --- merge is a mergeable value ---------------------------------------------------------

def incarnation(n, v, uid, has):
    """A record whose content is a function of its identity, as real records are: one
    (name, version, UID, HasShortID) always carries the same connections and short ID."""
    r = random.Random(f"{n}/{v}/{uid}/{has}")
    others = [c for c in (2, 3, 4, 5, 6) if c != n]
    return rec(n, v, uid, r.randrange(3), has, conns=r.sample(others, r.randrange(4)))


records = st.builds(incarnation, st.sampled_from([2, 3, 4, 5]), st.integers(0, 3),
                    st.integers(1, 3), st.booleans())
# mesh encodes an update from a set of names: one record per name per update
updates = st.lists(st.lists(records, min_size=1, max_size=3, unique_by=lambda r: r[0].name),
                   min_size=1, max_size=4)


def fresh(update):
    return [(Peer(p.name, p.nickname, p.uid, p.version, p.short_id, p.has_short_id), list(c)) for p, c in update]


@settings(max_examples=60, deadline=None)
@given(updates, st.randoms(use_true_random=False))
def test_merge_order_independent_and_idempotent(batch, rnd):
    a, b = make_peers(2, 3, 4, 5), make_peers(2, 3, 4, 5)
    for update in batch:
        a.apply_decoded(fresh(update))
    shuffled = list(batch)
    rnd.shuffle(shuffled)
    for update in shuffled:
        b.apply_decoded(fresh(update))
    assert state(a) == state(b)
    assert {sid: a.fetch_by_short_id(sid).name for sid in range(3) if a.fetch_by_short_id(sid)} == \
        {sid: b.fetch_by_short_id(sid).name for sid in range(3) if b.fetch_by_short_id(sid)}
    for update in batch:
        assert a.apply_decoded(fresh(update)).improved == set()


# --- codec ----------------------------------------------------------------------------

peer_strategy = st.builds(
    lambda n, nick, uid, v, sid, has, cs: Peer(N(n), nick, PeerUID(uid), v, sid, has,
                                              {c.remote_name: c for c in cs}),
    st.integers(0, (1 << 48) - 1), st.text(max_size=8), st.integers(0, (1 << 64) - 1),
    st.integers(0, (1 << 64) - 1), st.integers(0, 4095), st.booleans(),
    st.lists(st.builds(ConnectionSummary, st.builds(N, st.integers(0, (1 << 48) - 1)),
                       st.text(max_size=21), st.booleans(), st.booleans()), max_size=3),
)


@settings(max_examples=50, deadline=None)
@given(st.lists(peer_strategy, max_size=4))
def test_payload_round_trip(peers):
    decoded = decode_peers(encode_peers(peers))
    assert len(decoded) == len(peers)
    for original, (peer, conns) in zip(peers, decoded):
        assert peer.precedence() == original.precedence()
        assert (peer.name, peer.nickname, peer.short_id) == (original.name, original.nickname, original.short_id)
        assert {c.remote_name: c for c in conns} == original.connections


def test_summary_cut_off_before_connections_is_dropped():
    """mesh reads EOF after a peerSummary as the end of the stream, dropping it."""
    assert decode_peers(b"") == []
    enc = gob.Encoder()
    s2 = {"NameByte": N(2).to_bytes6(), "NickName": "a", "UID": 1, "Version": 1, "ShortID": 0, "HasShortID": False}
    s3 = dict(s2, NameByte=N(3).to_bytes6())
    data = enc.encode(PEER_SUMMARY, s2) + enc.encode(CONNECTION_SUMMARIES, []) + enc.encode(PEER_SUMMARY, s3)
    assert [p.name for p, _ in decode_peers(data)] == [N(2)]


def test_peers_encode_subset_and_topology_gossip_data_union():
    peers = make_peers(2)
    peers.apply_decoded([rec(2, conns=[US, 3]), rec(3, uid=3, conns=[2])])
    assert [p.name for p, _ in decode_peers(peers.encode({N(3), N(99)}))] == [N(3)]
    assert [p.name for p, _ in decode_peers(peers.encode())] == [N(2), N(3), US]
    a = TopologyGossipData(peers, frozenset({N(2)}))
    b = TopologyGossipData(peers, frozenset({N(3), N(2)}))
    assert a.merge(b).names == b.merge(a).names == {N(2), N(3)}
    assert a.merge(a) == a
    assert [p.name for p, _ in decode_peers(a.merge(b).encode()[0])] == [N(2), N(3)]


# --- a real Weave Net 2.8 capture ---------------------------------------------------------

CAPTURE_PEERS = {
    "aa:00:00:00:00:01": ("h1", 8215739316142177907, 1927),
    "aa:00:00:00:00:02": ("h2", 17938886139618852644, 2983),
    "aa:00:00:00:00:03": ("h3", 5259140615718535375, 683),
}


def topology_messages():
    msgs = [m for m in capture("mesh-ipam")["tcp_messages"] if m.get("channel") == "topology"]
    assert len(msgs) == 22
    return msgs


def test_every_captured_topology_payload_decodes_to_the_readme_peers():
    seen = set()
    for m in topology_messages():
        body = bytes.fromhex(m["hex"])
        env = decode_envelope(body[0], body[1:])
        assert (env.channel, str(env.src), len(env.payload)) == ("topology", m["src_peer"], m["gossip_payload_len"])
        decoded = decode_peers(env.payload)
        assert decoded
        for peer, conns in decoded:
            nick, uid, short_id = CAPTURE_PEERS[str(peer.name)]
            assert (peer.nickname, peer.uid, peer.short_id, peer.has_short_id) == (nick, uid, short_id, True)
            assert all(str(c.remote_name) in CAPTURE_PEERS for c in conns)
            assert all(c.remote_tcp_addr.startswith("192.168.77.") for c in conns)
            seen.add(str(peer.name))
    assert seen == set(CAPTURE_PEERS)


def test_h1_view_after_applying_what_h1_received():
    """Replay the topology gossip h1 received; h1's final view matches its /report."""
    h1 = LocalPeer(N(0xAA0000000001), "h1", PeerUID(8215739316142177907), 4, 1927, True)
    h1.connections = {N(0xAA0000000002): ConnectionSummary(N(0xAA0000000002), "192.168.77.2:6783", True, True),
                      N(0xAA0000000003): ConnectionSummary(N(0xAA0000000003), "192.168.77.3:55703", False, True)}
    peers = Peers(h1, random.Random(0))
    received = [m for m in topology_messages() if m["stream"].split("->")[1].startswith("h1:")]
    assert received
    for m in received:
        body = bytes.fromhex(m["hex"])
        peers.apply_update(decode_envelope(body[0], body[1:]).payload)
    h2, h3 = peers.fetch(N(0xAA0000000002)), peers.fetch(N(0xAA0000000003))
    assert (h2.version, h3.version) == (4, 4)
    assert {str(n): c.remote_tcp_addr for n, c in h2.connections.items()} == {
        "aa:00:00:00:00:03": "192.168.77.3:58641", "aa:00:00:00:00:01": "192.168.77.1:35063"}
    assert all(c.established for c in h3.connections.values())
    assert {str(n): c.outbound for n, c in h3.connections.items()} == {
        "aa:00:00:00:00:02": True, "aa:00:00:00:00:01": True}
    report = json.loads((reference_dir() / "captures" / "mesh-ipam.report-h1.json").read_text())
    expected = sorted(report["Router"]["Peers"], key=lambda p: p["Name"])
    for p in expected:
        p["Connections"].sort(key=lambda c: c["Name"])
    assert peers.status() == expected
