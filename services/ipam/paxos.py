"""Gossip-based single-decree Paxos for the initial IPAM ring (weave:ipam/paxos).

Every elector gossips what it knows of every node's claims (`PaxosClaims`, Weave's
paxos.GossipState); the value agreed on is a set of peer names, which then seeds the
ring with `claim_for_peers`.

- Prepare: `propose()` makes a promise one round above anything seen, with us as
  proposer.
- Promise: `think()` copies the highest promise anyone has made.
- Accept request: when a quorum has promised our proposal (and it is still our own
  promise) we accept it, with the value of the best earlier accepted proposal if any,
  else the names of every node we know.
- Accepted: if someone accepted the proposal we promised, we accept it too.
- Consensus: a quorum accepted values of the same origin.

NodeID carries the UID so that a restarted peer, which has forgotten its promises,
cannot pose as its former self. An `Observer` takes no part: it gossips no state and
never reaches consensus itself; it waits for a ring from an elector.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from shared.weave.peer_name import PeerName
from shared.errors import LocalProtocolError


class NodeID(NamedTuple):
    name: PeerName
    uid: int


class ProposalID(NamedTuple):
    """Ordered by (round, proposer name, proposer uid); round 0 means "none"."""

    round: int
    proposer: NodeID

    def valid(self) -> bool:
        return self.round > 0


NO_PROPOSAL = ProposalID(0, NodeID(PeerName(0), 0))


class AcceptedValue(NamedTuple):
    value: tuple[PeerName, ...]
    origin: ProposalID


NO_VALUE = AcceptedValue((), NO_PROPOSAL)


@dataclass(frozen=True)
class NodeClaims:
    promise: ProposalID = NO_PROPOSAL
    accepted: ProposalID = NO_PROPOSAL
    accepted_val: AcceptedValue = NO_VALUE

    def same(self, other: "NodeClaims") -> bool:
        """Weave's NodeClaims.equals: the value is identified by its origin."""
        return (self.promise, self.accepted, self.accepted_val.origin) == (
            other.promise, other.accepted, other.accepted_val.origin)


PaxosClaims = dict[NodeID, NodeClaims]
"""Every node's claims as one elector knows them (Weave's paxos.GossipState)."""


@dataclass(frozen=True)
class PaxosStatus:
    elector: bool
    known_nodes: int
    quorum: int


def merge_claims(mine: NodeClaims | None, theirs: NodeClaims) -> NodeClaims:
    """Keep the later promise and the later accepted proposal of the two."""
    if mine is None:
        return theirs
    promise = max(mine.promise, theirs.promise)
    if mine.accepted < theirs.accepted:
        return NodeClaims(promise, theirs.accepted, theirs.accepted_val)
    return NodeClaims(promise, mine.accepted, mine.accepted_val)


@dataclass
class Node:
    name: PeerName
    uid: int
    quorum: int = 0
    knows: PaxosClaims = field(default_factory=dict)

    @property
    def id(self) -> NodeID:
        return NodeID(PeerName(self.name), self.uid)

    def is_elector(self) -> bool:
        return True

    def set_quorum(self, quorum: int) -> None:
        self.quorum = quorum

    def gossip_state(self) -> PaxosClaims | None:
        return dict(self.knows)

    def update(self, incoming: PaxosClaims) -> PaxosClaims | None:
        """Merge what another node knows; returns the claims that changed, or None."""
        changed: PaxosClaims = {}
        for node_id, theirs in incoming.items():
            mine = self.knows.get(node_id)
            merged = merge_claims(mine, theirs)
            if mine is None or merged != mine:
                self.knows[node_id] = changed[node_id] = merged
        return changed or None

    def propose(self) -> None:
        """Prepare: promise a round above every round seen, proposed by us."""
        if self.quorum == 0:
            raise LocalProtocolError("Paxos propose() called with no quorum set")
        top = max((max(c.promise.round, c.accepted.round) for c in self.knows.values()), default=0)
        ours = self.knows.get(self.id, NodeClaims())
        self.knows[self.id] = NodeClaims(ProposalID(top + 1, self.id), ours.accepted, ours.accepted_val)
        if self.quorum == 1:
            self.think()

    def think(self) -> bool:
        """Run the Paxos steps on what we know; True if our own claims changed."""
        before = self.knows.get(self.id, NodeClaims())
        ours = NodeClaims(max([before.promise] + [c.promise for c in self.knows.values()]),
                          before.accepted, before.accepted_val)
        if ours.promise.proposer == self.id:
            ours = self._accept_request(ours)
        for claims in self.knows.values():
            if claims.accepted == ours.promise:
                ours = NodeClaims(ours.promise, claims.accepted, claims.accepted_val)
                break
        if ours.same(before):
            return False
        self.knows[self.id] = ours
        return True

    def _accept_request(self, ours: NodeClaims) -> NodeClaims:
        promised = [c for c in self.knows.values() if c.promise == ours.promise]
        if len(promised) < self.quorum:
            return ours
        best = max(promised, key=lambda c: c.accepted)
        value = best.accepted_val
        if not best.accepted.valid():
            value = AcceptedValue(self._pick_value(), ours.promise)
        return NodeClaims(ours.promise, ours.promise, value)

    def _pick_value(self) -> tuple[PeerName, ...]:
        # The names we know: at least a quorum, so good enough to seed the ring.
        return tuple(node_id.name for node_id in self.knows)

    def consensus(self) -> AcceptedValue | None:
        if self.quorum == 0:
            return None
        counts: dict[ProposalID, int] = {}
        for claims in self.knows.values():
            if claims.accepted.valid():
                origin = claims.accepted_val.origin
                counts[origin] = counts.get(origin, 0) + 1
                if counts[origin] >= self.quorum:
                    return claims.accepted_val
        return None

    def status(self) -> PaxosStatus:
        return PaxosStatus(True, len(self.knows), self.quorum)


class Observer:
    """A participant without a vote (weave launch --ipalloc-init=observer)."""

    quorum = 0

    def is_elector(self) -> bool:
        return False

    def set_quorum(self, quorum: int) -> None:
        pass

    def gossip_state(self) -> PaxosClaims | None:
        return None

    def update(self, incoming: PaxosClaims) -> PaxosClaims | None:
        return None

    def propose(self) -> None:
        pass

    def think(self) -> bool:
        return False

    def consensus(self) -> AcceptedValue | None:
        return None

    def status(self) -> PaxosStatus:
        return PaxosStatus(False, 0, 0)


Participant = Node | Observer
