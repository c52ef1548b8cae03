"""Every gob blob in the Weave Net 2.8 wire captures decodes, and re-encodes byte for byte.

Re-encoding uses the Go type declarations below (spec sections 2, 6, 7 and the type
definitions found in the captures). A real weaver numbers gob types process-wide, so a
blob's type ids are not 65, 66, ...: the test gives the Encoder the ids of types the
process had numbered before (`ids`, those below the blob's first value type) and lets
it number the rest in Go's order from there. Maps decode in wire order and re-encode in
that order, so even multi-entry maps compare byte for byte.
The encrypted capture carries only ciphertext after the handshake (no keys to open it),
so it contributes no plaintext gob; a test pins that.
"""
from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.weave.peer_name import PeerName
from shared.gob import (
    BOOL, BYTES, INT, STRING, UINT, Decoder, Encoder, GobError, Map, Ptr, Slice, Struct,
    decode, decode_all,
)
from shared.gob_types import Basic, Reader, base, to_wire
from tests.reference import CAPTURES, capture

# --- Go types (mesh: peers.go; weave: ipam/, nameserver/) ----------------------------

FEATURES = Map(STRING, STRING)
PEER_SUMMARY = Struct("peerSummary", (
    ("NameByte", BYTES), ("NickName", STRING), ("UID", UINT), ("Version", UINT),
    ("ShortID", UINT), ("HasShortID", BOOL),
))
CONNECTION_SUMMARY = Struct("connectionSummary", (
    ("NameByte", BYTES), ("RemoteTCPAddr", STRING), ("Outbound", BOOL), ("Established", BOOL),
))
CONNECTIONS = Slice(CONNECTION_SUMMARY)

DNS_ENTRY = Struct("Entry", (
    ("ContainerID", STRING), ("Origin", UINT), ("Addr", UINT), ("Hostname", STRING),
    ("Version", INT), ("Tombstone", INT),
))
DNS_GOSSIP = Struct("GossipData", (("Timestamp", INT), ("Entries", Slice(DNS_ENTRY, name="Entries"))))

RING_ENTRY = Struct("", (("Token", UINT), ("Peer", UINT), ("Version", UINT), ("Free", UINT)))
RING = Struct("Ring", (
    ("Start", UINT), ("End", UINT), ("Peer", UINT),
    ("Entries", Slice(Ptr(RING_ENTRY), name="entries")),
    ("Seeds", Slice(UINT, name="[]mesh.PeerName")),
))
NODE_ID = Struct("", (("Name", UINT), ("UID", UINT)))
PROPOSAL_ID = Struct("ProposalID", (("Round", UINT), ("Proposer", NODE_ID)))
ACCEPTED_VALUE = Struct("AcceptedValue", (("Value", Slice(UINT, name="Value")), ("Origin", PROPOSAL_ID)))
NODE_CLAIMS = Struct("", (("Promise", PROPOSAL_ID), ("Accepted", PROPOSAL_ID),
                          ("AcceptedVal", ACCEPTED_VALUE)))
IPAM_STATE = Struct("gossipState", (
    ("Now", INT),
    ("Nicknames", Map(UINT, STRING, name="map[mesh.PeerName]string")),
    ("Paxos", Map(NODE_ID, NODE_CLAIMS, name="GossipState")),
    ("Ring", Ptr(RING)),
))
RANGE = Struct("Range", (("Start", UINT), ("End", UINT)))
IPAM_UNICAST = {0: RANGE, 1: IPAM_STATE, 2: RANGE}  # SpaceRequest, RingUpdate, SpaceRequestDenied

# README tables: name -> (nickname, UID, ShortID)
PEERS = {
    "mesh-ipam": {
        "aa:00:00:00:00:01": ("h1", 8215739316142177907, 1927),
        "aa:00:00:00:00:02": ("h2", 17938886139618852644, 2983),
        "aa:00:00:00:00:03": ("h3", 5259140615718535375, 683),
    },
    "sleeve": {
        "aa:00:00:00:00:01": ("h1", 7715422125716935428, 2439),
        "aa:00:00:00:00:02": ("h2", 9301827528810874468, 3750),
    },
}


def _plaintext_messages():
    for name in CAPTURES:
        cap = capture(name)
        flags = {s["stream"]: (s.get("handshake") or {}).get("encryption_flag")
                 for s in cap["tcp_streams"]}
        for m in cap["tcp_messages"]:
            if flags[m["stream"]] == 0:
                yield name, m


def _messages(tag=None, channel=None):
    return [pytest.param(name, m, id=f"{name}:{m['stream']}#{m['index']}")
            for name, m in _plaintext_messages()
            if (tag is None and m["index"] == 0) or (m["tag"] in (tag or ()) and
                                                     channel in (None, m.get("channel")))]


GOSSIP = (4, 5, 6)


def _envelope(m) -> list:
    return decode_all(bytes.fromhex(m["hex"])[1:])


# --- replaying Go's encoder -----------------------------------------------------------

def _value_type_ids(blob: bytes) -> list[int]:
    ids, pos = [], 0
    while pos < len(blob):
        r = Reader(blob, pos, len(blob), 0)
        size = r.uint()
        start = r.pos
        type_id = r.int()
        if type_id >= 0:
            ids.append(type_id)
        pos = start + size
    return ids


def _go_ids(typ, type_id: int, wires, out: dict) -> None:
    """Pair our declaration with the blob's definitions, checking they are the same type."""
    t = base(typ)
    if isinstance(t, Basic):
        assert type_id == t.id
        return
    out[t] = type_id
    wire = wires[type_id]
    if isinstance(t, Struct):
        by_name = dict(wire.fields)
        for name, field_type in t.fields:
            _go_ids(field_type, by_name[name], wires, out)
    elif isinstance(t, Map):
        _go_ids(t.key, wire.key, wires, out)
        _go_ids(t.elem, wire.elem, wires, out)
    else:
        _go_ids(t.elem, wire.elem, wires, out)


def assert_replays(blob: bytes, typed_values: list[tuple]) -> bool:
    """Encoding these (type, value) pairs as a Go process would gives `blob` exactly.

    Returns whether Go's id numbering was replayed too: that is possible when the
    process numbered this blob's new types in one run (no other goroutine in between).
    """
    dec = Decoder(blob)
    for typ, _ in typed_values:
        dec.decode(typ)
    tops = _value_type_ids(blob)
    ids: dict = {}
    for (typ, _), top in zip(typed_values, tops):
        _go_ids(typ, top, dec.wire_types, ids)
    for t, i in ids.items():  # names, field order and ids are exactly Go's
        assert to_wire(t, ids) == dec.wire_types[i]
    first = min([i for i in tops if i >= 64], default=65)
    fresh = sorted(i for i in ids.values() if i >= first)
    numbered_in_one_run = fresh == list(range(first, first + len(fresh)))
    if numbered_in_one_run:
        enc = Encoder(ids={t: i for t, i in ids.items() if i < first}, next_id=first)
    else:
        enc = Encoder(ids=ids)
    assert b"".join(enc.encode(t, v) for t, v in typed_values).hex() == blob.hex()
    return numbered_in_one_run


# --- features -----------------------------------------------------------------------

@pytest.mark.parametrize("name,m", _messages())
def test_features_map(name, m):
    body = bytes.fromhex(m["hex"])
    features = decode(body)
    assert features == m["features"] == decode(body, FEATURES)
    nickname, uid, short_id = PEERS[name][features["Name"]]
    assert (features["NickName"], int(features["UID"]), int(features["ShortID"])) == \
        (nickname, uid, short_id)
    assert assert_replays(body, [(FEATURES, features)])


# --- gossip envelope ----------------------------------------------------------------

@pytest.mark.parametrize("name,m", _messages(GOSSIP))
def test_gossip_envelope(name, m):
    stream = bytes.fromhex(m["hex"])[1:]
    types = [STRING, UINT] + ([UINT] if m["tag"] == 5 else []) + [BYTES]
    dec = Decoder(stream)
    values = [dec.decode(t) for t in types]
    assert dec.at_eof() and values == decode_all(stream)
    assert values[0] == m["channel"]
    assert str(PeerName(values[1])) == m["src_peer"]
    if m["tag"] == 5:
        assert str(PeerName(values[2])) == m["dst_peer"]
    assert len(values[-1]) == m["gossip_payload_len"]
    assert_replays(stream, list(zip(types, values)))


# --- topology -----------------------------------------------------------------------

@pytest.mark.parametrize("name,m", _messages(GOSSIP, "topology"))
def test_topology_payload(name, m):
    payload = _envelope(m)[-1]
    untyped = decode_all(payload)
    assert len(untyped) % 2 == 0 and untyped
    dec = Decoder(payload)
    pairs = []
    while not dec.at_eof():
        pairs.append((dec.decode(PEER_SUMMARY), dec.decode(CONNECTIONS)))
    assert [v for pair in pairs for v in pair] == untyped
    for peer, connections in pairs:
        nickname, uid, short_id = PEERS[name][str(PeerName.from_bytes6(peer["NameByte"]))]
        assert (peer["NickName"], peer["UID"], peer["ShortID"], peer["HasShortID"]) == \
            (nickname, uid, short_id, True)
        for conn in connections:
            assert str(PeerName.from_bytes6(conn["NameByte"])) in PEERS[name]
            host, port = conn["RemoteTCPAddr"].rsplit(":", 1)
            assert ipaddress.ip_address(host) in ipaddress.ip_network("192.168.77.0/24")
    assert_replays(payload, [(t, v) for pair in pairs for t, v in
                             zip((PEER_SUMMARY, CONNECTIONS), pair)])


# --- IPAM -----------------------------------------------------------------------------

def _ipam_blob(m) -> tuple[bytes, object]:
    payload = _envelope(m)[-1]
    if m["tag"] == 5:
        return payload[1:], IPAM_UNICAST[payload[0]]
    return payload, IPAM_STATE


@pytest.mark.parametrize("name,m", _messages(GOSSIP, "IPallocation"))
def test_ipam_payload(name, m):
    blob, typ = _ipam_blob(m)
    value = decode(blob, typ)
    assert decode(blob) == value  # the wire shape and our declaration agree
    assert assert_replays(blob, [(typ, value)])
    if typ is RANGE:
        assert value["Start"] < value["End"]
        return
    peers = {PeerName.parse(p): uid for p, (_, uid, _) in PEERS[name].items()}
    assert set(value["Nicknames"]) <= set(peers)
    for node_id, claims in (value["Paxos"] or {}).items():
        assert node_id in peers.items()  # struct key -> (Name, UID)
        assert claims["Promise"]["Proposer"]["UID"] in (0, *peers.values())
    if value["Ring"] is not None:
        _check_ring(value["Ring"], set(peers))


def _check_ring(ring, peers):
    assert (ring["Start"], ring["End"]) == (int(ipaddress.ip_address("10.32.0.0")),
                                            int(ipaddress.ip_address("10.48.0.0")))
    tokens = [e["Token"] for e in ring["Entries"]]
    assert tokens == sorted(tokens) and {e["Peer"] for e in ring["Entries"]} <= peers
    assert set(ring["Seeds"]) <= peers


def test_ipam_rings_add_up_to_the_report():
    """README end state: 10.32.0.0 h1 (version 3), 10.38.0.0 h2 (1), 10.40.0.0 h3 (1).

    Each owner bumps its own entry's version (free count reports), so the report is the
    highest version seen per token across all rings h1 received and sent.
    """
    newest: dict[int, dict] = {}
    for name, m in _plaintext_messages():
        if name == "mesh-ipam" and m["tag"] in GOSSIP and m["channel"] == "IPallocation":
            blob, typ = _ipam_blob(m)
            ring = decode(blob, typ)["Ring"] if typ is IPAM_STATE else None
            for e in (ring or {}).get("Entries", []):
                if e["Version"] >= newest.get(e["Token"], {"Version": -1})["Version"]:
                    newest[e["Token"]] = e
    got = [(str(ipaddress.ip_address(e["Token"])), str(PeerName(e["Peer"])), e["Version"])
           for _, e in sorted(newest.items())]
    assert got == [("10.32.0.0", "aa:00:00:00:00:01", 3), ("10.38.0.0", "aa:00:00:00:00:02", 1),
                   ("10.40.0.0", "aa:00:00:00:00:03", 1)]


# --- DNS ------------------------------------------------------------------------------

@pytest.mark.parametrize("name,m", _messages(GOSSIP, "nameserver"))
def test_nameserver_payload(name, m):
    payload = _envelope(m)[-1]
    value = decode(payload, DNS_GOSSIP)
    assert decode(payload) == value
    assert assert_replays(payload, [(DNS_GOSSIP, value)])
    assert abs(value["Timestamp"] - capture(name)["capture_start_epoch"]) < 120
    for entry in value["Entries"]:
        assert (entry["ContainerID"], str(ipaddress.ip_address(entry["Addr"])),
                entry["Hostname"], str(PeerName(entry["Origin"]))) in {
            ("c1", "10.32.0.1", "alpha.weave.local.", "aa:00:00:00:00:01"),
            ("c2", "10.38.0.0", "beta.weave.local.", "aa:00:00:00:00:02"),
        }


def test_nameserver_tombstone_as_in_report():
    entries = [e for _, m in _plaintext_messages() if m.get("channel") == "nameserver"
               for e in decode(_envelope(m)[-1], DNS_GOSSIP)["Entries"]]
    tombstones = {(e["Hostname"], e["Version"], e["Tombstone"]) for e in entries if e["Tombstone"]}
    assert tombstones == {("alpha.weave.local.", 1, 1795982695)}
    assert ("beta.weave.local.", 0, 0) in {(e["Hostname"], e["Version"], e["Tombstone"])
                                            for e in entries}


# --- coverage of the captures -----------------------------------------------------------

def test_every_plaintext_gob_blob_is_covered():
    counts = {name: 0 for name in CAPTURES}
    for name, m in _plaintext_messages():
        if m["index"] == 0 or m["tag"] in GOSSIP:
            counts[name] += 1
    # README: 6 features + 58 gossip; 4 features + 14 gossip; encrypted: none readable
    assert counts == {"mesh-ipam": 64, "sleeve": 18, "encrypted-handshake": 0}
    encrypted = capture("encrypted-handshake")["tcp_messages"]
    assert len(encrypted) == 19 and all(m["tag"] is None for m in encrypted)


def _all_blobs() -> list[tuple[bytes, object]]:
    """(gob stream, its type or None when it holds several types) for every blob."""
    blobs = []
    for _, m in _plaintext_messages():
        body = bytes.fromhex(m["hex"])
        if m["index"] == 0:
            blobs.append((body, FEATURES))
        elif m["tag"] in GOSSIP:
            blobs.append((body[1:], None))
            if m["channel"] == "IPallocation":
                blobs.append(_ipam_blob(m))
            else:
                typ = DNS_GOSSIP if m["channel"] == "nameserver" else None
                blobs.append((_envelope(m)[-1], typ))
    return blobs


BLOBS = _all_blobs()


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(BLOBS), st.data())
def test_mutated_capture_blobs_only_raise_gob_error(blob_typ, data):
    blob, typ = blob_typ
    raw = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(raw) - 1))
        op = data.draw(st.sampled_from(["flip", "cut", "insert"]))
        if op == "flip":
            raw[pos] ^= data.draw(st.integers(1, 255))
        elif op == "cut":
            del raw[pos:pos + data.draw(st.integers(1, 8))]
        else:
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=4))
    for t in {None, typ}:
        try:
            decode_all(bytes(raw), t)
        except GobError:
            pass
