"""Channel `IPallocation` payloads on the wire, exactly as weave's Go writes them.

Go types (weave:ipam/allocator.go, ring/ring.go, ring/entry.go, paxos/paxos.go,
net/address), as gob sees them:

    type gossipState struct {
        Now int64; Nicknames map[mesh.PeerName]string
        Paxos paxos.GossipState   // map[NodeID]NodeClaims; only while there is no ring
        Ring *ring.Ring           // once there is one
    }
    type Ring struct { Start, End address.Address; Peer mesh.PeerName
                       Entries entries /* []*entry */; Seeds []mesh.PeerName }
    type entry struct { Token address.Address; Peer mesh.PeerName; Version uint32; Free address.Count }
    type NodeID struct { Name mesh.PeerName; UID mesh.PeerUID }
    type ProposalID struct { Round uint; Proposer NodeID }
    type AcceptedValue struct { Value []mesh.PeerName /* type Value */; Origin ProposalID }
    type NodeClaims struct { Promise, Accepted ProposalID; AcceptedVal AcceptedValue }
    type Range struct { Start, End address.Address }

Addresses, names, UIDs, versions and rounds are gob uint; Now is gob int. Struct and
composite names below are the ones Go puts in its type definitions (Go leaves some
empty), so that re-encoded payloads match captured bytes. A gossip or broadcast payload
is one fresh gob stream holding a gossipState; a unicast payload is one type byte
(0 SpaceRequest, 1 RingUpdate, 2 SpaceRequestDenied) then a fresh gob stream.

An empty Paxos map is sent (`{}`: an elector that has not proposed yet), a nil one is
omitted (`None`: an observer, or a peer with a ring); the receiver tells them apart.
"""
from __future__ import annotations

from shared.weave.peer_name import NAME_MASK, PeerName
from services.ipam.address import Range
from services.ipam.entry import RingEntry
from services.ipam.messages import (MSG_RING_UPDATE, MSG_SPACE_REQUEST, MSG_SPACE_REQUEST_DENIED,
                                    IpamGossip, RingUpdate, SpaceRequest, SpaceRequestDenied,
                                    Unicast)
from services.ipam.paxos import AcceptedValue, NodeClaims, NodeID, ProposalID
from services.ipam.ring import Ring
from shared import gob
from shared.errors import LocalProtocolError, RemoteProtocolError

NODE_ID = gob.Struct("", (("Name", gob.UINT), ("UID", gob.UINT)))
PROPOSAL_ID = gob.Struct("ProposalID", (("Round", gob.UINT), ("Proposer", NODE_ID)))
VALUE = gob.Slice(gob.UINT, name="Value")
ACCEPTED_VALUE = gob.Struct("AcceptedValue", (("Value", VALUE), ("Origin", PROPOSAL_ID)))
NODE_CLAIMS = gob.Struct("", (("Promise", PROPOSAL_ID), ("Accepted", PROPOSAL_ID),
                              ("AcceptedVal", ACCEPTED_VALUE)))
PAXOS_STATE = gob.Map(NODE_ID, NODE_CLAIMS, name="GossipState")
ENTRY = gob.Struct("", (("Token", gob.UINT), ("Peer", gob.UINT), ("Version", gob.UINT), ("Free", gob.UINT)))
ENTRIES = gob.Slice(gob.Ptr(ENTRY), name="entries")
SEEDS = gob.Slice(gob.UINT, name="[]mesh.PeerName")
RING = gob.Struct("Ring", (("Start", gob.UINT), ("End", gob.UINT), ("Peer", gob.UINT),
                           ("Entries", ENTRIES), ("Seeds", SEEDS)))
NICKNAMES = gob.Map(gob.UINT, gob.STRING, name="map[mesh.PeerName]string")
GOSSIP_STATE = gob.Struct("gossipState", (("Now", gob.INT), ("Nicknames", NICKNAMES),
                                          ("Paxos", PAXOS_STATE), ("Ring", gob.Ptr(RING))))
RANGE = gob.Struct("Range", (("Start", gob.UINT), ("End", gob.UINT)))

U32 = (1 << 32) - 1


def bad(message: str, **attrs) -> RemoteProtocolError:
    return RemoteProtocolError(message, code="bad_ipam_payload", **attrs)


# -- gossipState ----------------------------------------------------------------------

def encode_gossip(state: IpamGossip, encoder: gob.Encoder | None = None) -> bytes:
    """A gossip/broadcast payload. `encoder` defaults to a fresh one, as Go uses."""
    return (encoder or gob.Encoder()).encode(GOSSIP_STATE, gossip_to_gob(state))


def decode_gossip(payload: bytes) -> IpamGossip:
    """Parse a peer's payload; RemoteProtocolError (incl. GobError) if malformed."""
    return gossip_from_gob(gob.decode(payload, GOSSIP_STATE))


def gossip_to_gob(state: IpamGossip) -> dict:
    return {"Now": state.now,
            "Nicknames": {int(k): v for k, v in state.nicknames.items()},
            "Paxos": None if state.paxos is None else {tuple(k): _claims_to_gob(c) for k, c in state.paxos.items()},
            "Ring": None if state.ring is None else ring_to_gob(state.ring)}


def gossip_from_gob(v: dict) -> IpamGossip:
    paxos = None
    if v["Paxos"] is not None:
        paxos = {_node_id(k): _claims_from_gob(c) for k, c in v["Paxos"].items()}
    return IpamGossip(now=v["Now"], nicknames={_peer(k): s for k, s in (v["Nicknames"] or {}).items()},
                       paxos=paxos, ring=None if v["Ring"] is None else ring_from_gob(v["Ring"]))


# -- Ring -----------------------------------------------------------------------------

def ring_to_gob(ring: Ring) -> dict:
    return {"Start": ring.start, "End": ring.end, "Peer": int(ring.peer),
            "Entries": [{"Token": e.token, "Peer": int(e.peer), "Version": e.version, "Free": e.free}
                        for e in ring.entries],
            "Seeds": [int(s) for s in ring.seeds]}


def ring_from_gob(v: dict) -> Ring:
    start, end = _u32(v["Start"], "Start"), _u32(v["End"], "End")
    if not start < end:
        raise bad(f"ring range {start}..{end} is empty", start=start, end=end)
    entries = [RingEntry(_u32(e["Token"], "Token"), _peer(e["Peer"]), _u32(e["Version"], "Version"),
                     _u32(e["Free"], "Free")) for e in v["Entries"]]
    return Ring(start, end, _peer(v["Peer"]), entries, [_peer(s) for s in v["Seeds"]])


# -- Paxos ----------------------------------------------------------------------------

def _proposal_to_gob(p: ProposalID) -> dict:
    return {"Round": p.round, "Proposer": {"Name": int(p.proposer.name), "UID": p.proposer.uid}}


def _claims_to_gob(c: NodeClaims) -> dict:
    return {"Promise": _proposal_to_gob(c.promise), "Accepted": _proposal_to_gob(c.accepted),
            "AcceptedVal": {"Value": [int(n) for n in c.accepted_val.value],
                            "Origin": _proposal_to_gob(c.accepted_val.origin)}}


def _node_id(v) -> NodeID:
    name, uid = (v["Name"], v["UID"]) if isinstance(v, dict) else v
    return NodeID(_peer(name), uid)


def _proposal(v: dict) -> ProposalID:
    return ProposalID(v["Round"], _node_id(v["Proposer"]))


def _claims_from_gob(v: dict) -> NodeClaims:
    val = v["AcceptedVal"]
    return NodeClaims(_proposal(v["Promise"]), _proposal(v["Accepted"]),
                      AcceptedValue(tuple(_peer(n) for n in val["Value"]), _proposal(val["Origin"])))


# -- unicasts ---------------------------------------------------------------------------

def encode_unicast(message: Unicast, encoder: gob.Encoder | None = None) -> bytes:
    enc = encoder or gob.Encoder()
    if isinstance(message, SpaceRequest):
        return bytes([MSG_SPACE_REQUEST]) + enc.encode(RANGE, _range_to_gob(message.range))
    if isinstance(message, SpaceRequestDenied):
        return bytes([MSG_SPACE_REQUEST_DENIED]) + enc.encode(RANGE, _range_to_gob(message.range))
    if isinstance(message, RingUpdate):
        return bytes([MSG_RING_UPDATE]) + enc.encode(GOSSIP_STATE, gossip_to_gob(message.state))
    raise LocalProtocolError(f"not an IPAM unicast: {message!r}")


def decode_unicast(payload: bytes) -> Unicast:
    if not payload:
        raise bad("empty IPAM unicast")
    kind, body = payload[0], payload[1:]
    if kind == MSG_SPACE_REQUEST:
        return SpaceRequest(_range(gob.decode(body, RANGE)))
    if kind == MSG_SPACE_REQUEST_DENIED:
        return SpaceRequestDenied(_range(gob.decode(body, RANGE)))
    if kind == MSG_RING_UPDATE:
        return RingUpdate(decode_gossip(body))
    raise bad(f"unknown IPAM unicast type {kind}", kind=kind)


def _range_to_gob(r: Range) -> dict:
    return {"Start": r.start, "End": r.end}


def _range(v: dict) -> Range:
    start, end = _u32(v["Start"], "Start"), _u32(v["End"], "End")
    if not start < end:
        raise bad(f"requested range {start}..{end} is empty", start=start, end=end)
    return Range(start, end)


# -- checks ---------------------------------------------------------------------------------

def _u32(value: int, what: str) -> int:
    if not 0 <= value <= U32:
        raise bad(f"{what} {value} does not fit in 32 bits", field=what, value=value)
    return value


def _peer(value: int) -> PeerName:
    if not 0 <= value <= NAME_MASK:
        raise bad(f"peer name {value} does not fit in 48 bits", value=value)
    return PeerName(value)
