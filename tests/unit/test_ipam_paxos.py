"""Gossip Paxos: consensus among 3 and 5 electors over a lossy, reordering in-memory
network (seeded), safety of the first consensus, observers, claims merge laws."""
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.weave.peer_name import PeerName
from services.ipam.paxos import (AcceptedValue, Node, NodeClaims, NodeID, Observer, ProposalID,
                                 merge_claims)
from shared.errors import LocalProtocolError


class Net:
    """Nodes gossiping full state; messages are dropped and delivered out of order."""

    def __init__(self, n: int, seed: int, loss: float) -> None:
        self.rng = random.Random(seed)
        self.loss = loss
        quorum = n // 2 + 1
        self.nodes = [Node(PeerName(i + 1), self.rng.getrandbits(63), quorum) for i in range(n)]
        self.queue: list[tuple[int, dict]] = []
        self.first: dict[int, AcceptedValue] = {}

    def gossip(self, i: int) -> None:
        for j in range(len(self.nodes)):
            if j != i and self.rng.random() >= self.loss:
                self.queue.append((j, self.nodes[i].gossip_state()))

    def deliver_one(self) -> None:
        j, state = self.queue.pop(self.rng.randrange(len(self.queue)))
        node = self.nodes[j]
        if node.update(state) is not None:
            node.think()
            self.gossip(j)
        self.note_consensus()

    def note_consensus(self) -> None:
        for i, node in enumerate(self.nodes):
            c = node.consensus()
            if c is not None:
                assert self.first.setdefault(i, c).origin == c.origin, "consensus changed"

    def run(self, max_steps: int = 20000) -> int:
        """Deliver until every node knows a consensus; 'ticks' re-propose when quiet."""
        ticks = 0
        for _ in range(max_steps):
            if all(n.consensus() is not None for n in self.nodes):
                return ticks
            if self.queue:
                self.deliver_one()
                continue
            ticks += 1  # quiet: a 5 s tick; someone without consensus re-proposes
            waiting = [i for i, n in enumerate(self.nodes) if n.consensus() is None]
            i = self.rng.choice(waiting)
            if self.rng.random() < 0.5:
                self.nodes[i].propose()
            self.gossip(i)
        raise AssertionError("no consensus")


@pytest.mark.parametrize("n", [3, 5])
@pytest.mark.parametrize("loss", [0.0, 0.3, 0.6])
@pytest.mark.parametrize("seed", range(8))
def test_consensus_with_loss_and_reordering(n, loss, seed):
    net = Net(n, seed, loss)
    for i in net.rng.sample(range(n), net.rng.randint(1, n)):  # several rival proposers
        net.nodes[i].propose()
        net.gossip(i)
    net.run()
    values = {n.consensus() for n in net.nodes}
    assert len(values) == 1
    value = values.pop()
    assert len(set(value.value)) >= n // 2 + 1  # at least a quorum of names
    assert set(value.value) <= {node.name for node in net.nodes}


def test_quorum_of_one_agrees_at_once():
    node = Node(PeerName(7), 99, quorum=1)
    node.propose()
    assert node.consensus() == AcceptedValue((PeerName(7),), ProposalID(1, NodeID(PeerName(7), 99)))


def test_no_consensus_without_quorum():
    node = Node(PeerName(1), 1, quorum=2)
    node.propose()
    assert node.consensus() is None
    assert node.status().known_nodes == 1 and node.status().quorum == 2


def test_propose_without_quorum_is_a_bug():
    with pytest.raises(LocalProtocolError):
        Node(PeerName(1), 1).propose()


def test_update_returns_only_what_is_new():
    a, b = Node(PeerName(1), 1, 2), Node(PeerName(2), 2, 2)
    a.propose()
    delta = b.update(a.gossip_state())
    assert delta == {a.id: a.knows[a.id]}
    assert b.update(a.gossip_state()) is None


def test_idle_acceptor_promises_and_proposer_picks_known_names():
    a, b = Node(PeerName(1), 1, 2), Node(PeerName(2), 2)  # b idle: no quorum set yet
    a.propose()
    b.update(a.gossip_state())
    assert b.think()  # promises a's proposal
    a.update(b.gossip_state())
    assert a.think()  # a quorum promised: a accepts its own value
    assert sorted(a.knows[a.id].accepted_val.value) == [PeerName(1), PeerName(2)]
    b.update(a.gossip_state())
    b.think()
    a.update(b.gossip_state())
    assert a.consensus() is not None and b.consensus() is None  # b has no quorum set


def test_observer_takes_no_part():
    o = Observer()
    o.propose()
    assert o.gossip_state() is None and o.update({}) is None and not o.think()
    assert o.consensus() is None and not o.is_elector()
    assert o.status().elector is False


ids = st.builds(lambda r, n, u: ProposalID(r, NodeID(PeerName(n), u)),
                st.integers(0, 3), st.integers(1, 3), st.integers(0, 2))
claims = st.builds(lambda p, a: NodeClaims(p, a, AcceptedValue((a.proposer.name,), a)), ids, ids)


@settings(max_examples=100)
@given(claims, claims, claims)
def test_merge_claims_is_a_semilattice(a, b, c):
    assert merge_claims(a, a) == a
    assert merge_claims(a, b) == merge_claims(b, a)
    assert merge_claims(merge_claims(a, b), c) == merge_claims(a, merge_claims(b, c))
