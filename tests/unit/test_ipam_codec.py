"""IPallocation payloads: every captured one decodes, re-encodes to the same value and,
with the type ids the Go process used, to the same bytes; malformed input is refused."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.weave.peer_name import PeerName
from services.ipam import codec
from services.ipam.address import Range
from services.ipam.entry import RingEntry
from services.ipam.messages import IpamGossip, RingUpdate, SpaceRequest, SpaceRequestDenied
from services.ipam.paxos import AcceptedValue, NodeClaims, NodeID, ProposalID
from services.ipam.ring import Ring
from shared import gob
from shared.errors import RemoteProtocolError
from tests.reference import capture

H1, H2, H3 = (PeerName(0xAA0000000001 + i) for i in range(3))


def ipam_messages(name):
    msgs = [m for m in capture(name)["tcp_messages"] if m.get("channel") == "IPallocation"]
    return sorted(msgs, key=lambda m: m["t"])


def payload_of(message) -> bytes:
    """The channel payload inside a captured gossip message (after the envelope)."""
    return gob.decode_all(bytes.fromhex(message["hex"])[1:])[-1]


CAPTURED = [(name, m) for name in ("mesh-ipam", "sleeve") for m in ipam_messages(name)]


def test_captures_hold_every_kind_of_ipam_message():
    kinds = {(name, m["tag"]) for name, m in CAPTURED}
    assert kinds == {("mesh-ipam", 4), ("mesh-ipam", 5), ("mesh-ipam", 6), ("sleeve", 4), ("sleeve", 6)}
    assert len(CAPTURED) == 23 + 8


def ids_like(wires: dict, top: int, typ) -> dict:
    """Pair our Go types with the type ids a captured stream gave them."""
    ids = {}

    def walk(t, wire_id):
        t = gob.base(t)
        if isinstance(t, gob.Basic) or t in ids:
            return
        ids[t] = wire_id
        w = wires[wire_id]
        if isinstance(t, gob.Struct):
            assert [n for n, _ in t.fields] == [n for n, _ in w.fields]
            for (_, ft), (_, fid) in zip(t.fields, w.fields):
                walk(ft, fid)
        elif isinstance(t, gob.Slice):
            walk(t.elem, w.elem)
        elif isinstance(t, gob.Map):
            walk(t.key, w.key)
            walk(t.elem, w.elem)

    walk(typ, top)
    return ids


def go_encoder(stream: bytes) -> gob.Encoder:
    """An encoder numbering types as the Go process that wrote `stream` did."""
    dec = gob.Decoder(stream)
    dec.decode()
    top = next(i for i, w in dec.wire_types.items() if w.name in ("gossipState", "Range"))
    typ = codec.GOSSIP_STATE if dec.wire_types[top].name == "gossipState" else codec.RANGE
    # Go names types exactly as we declare them; check, as byte equality depends on it
    assert {w.name for w in dec.wire_types.values()} <= {
        "gossipState", "map[mesh.PeerName]string", "GossipState", "", "ProposalID", "AcceptedValue",
        "Value", "Ring", "entries", "[]mesh.PeerName", "Range"}
    return gob.Encoder(ids=ids_like(dec.wire_types, top, typ))


@pytest.mark.parametrize("name,m", CAPTURED, ids=[f"{n}@{m['t']}" for n, m in CAPTURED])
def test_captured_payload_roundtrip(name, m):
    payload = payload_of(m)
    if m["tag"] == 5:
        msg = codec.decode_unicast(payload)
        assert codec.decode_unicast(codec.encode_unicast(msg)) == msg
        assert codec.encode_unicast(msg, go_encoder(payload[1:])) == payload
    else:
        state = codec.decode_gossip(payload)
        assert codec.decode_gossip(codec.encode_gossip(state)) == state
        assert codec.encode_gossip(state, go_encoder(payload)) == payload


def test_captured_space_request_golden():
    request = next(m for m in ipam_messages("mesh-ipam") if m["len"] == 96)
    payload = payload_of(request)
    assert payload.hex() == (
        "00" "25ffb10301010552616e676501ffb2000102010553746172740106000103456e6401060000000f"
        "ffb201fc0a20000001fc0a30000000")
    msg = SpaceRequest(Range(0x0A200000, 0x0A300000))
    assert codec.decode_unicast(payload) == msg
    assert codec.encode_unicast(msg, gob.Encoder(ids={codec.RANGE: 89})) == payload
    # a fresh encoder (what we send) numbers Range 65
    fresh = codec.encode_unicast(msg)
    assert fresh[0] == 0 and codec.decode_unicast(fresh) == msg and b"\xff\x82" in fresh


def test_captured_values():
    first = codec.decode_gossip(payload_of(ipam_messages("mesh-ipam")[0]))
    assert first == IpamGossip(1795982677, {H2: "h2"}, {}, None)  # elector, not proposed: empty map sent
    donation = codec.decode_unicast(payload_of(next(m for m in ipam_messages("mesh-ipam") if m["len"] == 715)))
    ring = donation.state.ring
    assert [(e.token, e.peer, e.version, e.free) for e in ring.entries] == [
        (0x0A200000, H1, 2, 393216), (0x0A260000, H2, 0, 131072), (0x0A280000, H3, 0, 524288)]
    assert ring.seeds == [H1, H3] and ring.peer == H1 and donation.state.paxos is None


def test_nil_and_empty_paxos_are_told_apart():
    observer = codec.decode_gossip(codec.encode_gossip(IpamGossip(5, {H1: "h1"}, None, None)))
    elector = codec.decode_gossip(codec.encode_gossip(IpamGossip(5, {H1: "h1"}, {}, None)))
    assert observer.paxos is None and elector.paxos == {}


@pytest.mark.parametrize("msg", [SpaceRequest(Range(1, 2)), SpaceRequestDenied(Range(7, 8)),
                                 RingUpdate(IpamGossip(9, {}, None, Ring(0, 256, H1, [RingEntry(0, H1, 3, 256)], [H1])))])
def test_unicast_roundtrip_and_type_byte(msg):
    data = codec.encode_unicast(msg)
    assert data[0] == {SpaceRequest: 0, RingUpdate: 1, SpaceRequestDenied: 2}[type(msg)]
    assert codec.decode_unicast(data) == msg


def ring_gob(**over):
    ring = {"Start": 0, "End": 256, "Peer": int(H1), "Entries": [{"Token": 0, "Peer": int(H1), "Version": 0, "Free": 1}],
            "Seeds": []}
    ring.update(over)
    return gob.encode(codec.GOSSIP_STATE, {"Now": 1, "Nicknames": None, "Paxos": None, "Ring": ring})


@pytest.mark.parametrize("data", [
    b"",
    b"\x03" + gob.encode(codec.RANGE, {"Start": 1, "End": 2}),
    b"\x00" + gob.encode(codec.RANGE, {"Start": 2, "End": 2}),
    b"\x00" + gob.encode(codec.RANGE, {"Start": 1, "End": 1 << 33}),
    b"\x00\x05\x06",
    b"\x01" + ring_gob(Start=10, End=10),
    b"\x01" + ring_gob(Entries=[{"Token": 1 << 32, "Peer": 1, "Version": 0, "Free": 0}]),
    b"\x01" + ring_gob(Entries=[{"Token": 0, "Peer": 1 << 48, "Version": 0, "Free": 0}]),
    b"\x01" + ring_gob(Seeds=[1 << 50]),
])
def test_malformed_unicasts_are_remote_errors(data):
    with pytest.raises(RemoteProtocolError):
        codec.decode_unicast(data)


def test_truncated_gossip_is_a_remote_error():
    payload = payload_of(ipam_messages("mesh-ipam")[5])
    with pytest.raises(RemoteProtocolError):
        codec.decode_gossip(payload[:-3])


names = st.integers(1, (1 << 48) - 1).map(PeerName)
proposals = st.builds(lambda r, n, u: ProposalID(r, NodeID(n, u)), st.integers(0, 9), names, st.integers(0, (1 << 64) - 1))
claims = st.builds(NodeClaims, proposals, proposals,
                   st.builds(AcceptedValue, st.lists(names, max_size=4).map(tuple), proposals))


@st.composite
def rings(draw):
    tokens = sorted(draw(st.sets(st.integers(0, 255), min_size=1, max_size=6)))
    entries = [RingEntry(t, draw(names), draw(st.integers(0, (1 << 32) - 1)), draw(st.integers(0, 1)))
               for t in tokens]
    return Ring(0, 256, draw(names), entries, draw(st.lists(names, max_size=3)))


states = st.builds(IpamGossip, st.integers(-(1 << 62), 1 << 62), st.dictionaries(names, st.text(max_size=8), max_size=4),
                   st.none() | st.dictionaries(st.builds(NodeID, names, st.integers(0, (1 << 64) - 1)), claims, max_size=3),
                   st.none() | rings())


@settings(max_examples=80)
@given(states)
def test_gossip_roundtrip_property(state):
    assert codec.decode_gossip(codec.encode_gossip(state)) == state
