"""kube-peers' sans-I/O cores against the fixtures' Nodes and ConfigMap: Weave's peer
addresses, target diffs from Node lists and watch events, the weave-net ConfigMap's
annotations byte for byte, the reclaim election step by step, and many nodes reclaiming
at once over a ConfigMap with optimistic concurrency (any interleaving, restarts
included): each dead peer is reclaimed by exactly one node, live peers never."""
from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import RemoteProtocolError
from shared.schemas.mesh import PeerInfo as MeshPeer
from shared.schemas.mesh import TopologyEvent
from tests.kube_api import fixture
from weavectl.kube_peers import peer_list as pl
from weavectl.kube_peers import reclaim as rc
from weavectl.kube_peers.nodes import NodeInfo, NodeWatch, TargetChange, node_info, peer_addresses
from weavectl.kube_peers.readiness import readiness

A, B, C, D = "aa:00:00:00:00:01", "aa:00:00:00:00:02", "aa:00:00:00:00:03", "aa:00:00:00:00:09"


# ---- nodes ------------------------------------------------------------------------------------

def test_node_addresses_as_weave_chooses_them():
    infos = [node_info(n) for n in fixture("nodes.json")["items"]]
    assert infos == [NodeInfo("node-a", "10.0.0.1"), NodeInfo("node-b", "10.0.0.2"),  # InternalIP before External
                     NodeInfo("node-c", "203.0.113.3"),  # no InternalIP: the ExternalIP
                     NodeInfo("node-d", "")]  # IPv6 only: a node, not a peer
    assert peer_addresses(infos) == ["10.0.0.1", "10.0.0.2", "203.0.113.3"]
    assert node_info({"metadata": {}}) is None
    assert node_info({"metadata": {"name": "x"}, "status": {"addresses": [{"type": "InternalIP", "address": "no"}]}}) \
        == NodeInfo("x", "")


def test_node_watch_turns_lists_and_events_into_target_changes():
    w = NodeWatch("node-a")
    assert not w.synced
    first = w.on_list(fixture("nodes.json")["items"], "1040")
    assert first == TargetChange(connect=("10.0.0.2", "203.0.113.3"), replace=True), "ours excluded, replace first"
    assert w.synced and w.resource_version == "1040"
    added, heartbeat, moved, deleted = [(e["type"], e["object"]) for e in fixture("nodes-watch.jsonl")]
    assert w.on_event(*added) == TargetChange(connect=("10.0.0.5",))
    assert not w.on_event(*heartbeat), "a MODIFIED that moves no address changes nothing"
    assert w.on_event(*moved) == TargetChange(connect=("10.0.0.3",), forget=("203.0.113.3",))
    assert w.resource_version == "1044"
    assert w.on_event(*deleted) == TargetChange(deleted=("node-a",)), "our own node: no target, but reclaim"
    assert w.on_event("DELETED", deleted[1]) == TargetChange(), "a second DELETED is nothing"
    # a relist without node-e (deleted while we were not watching): forget it, and reclaim
    items = [n for n in fixture("nodes.json")["items"] if n["metadata"]["name"] != "node-a"]
    assert w.on_list(items, "1050") == TargetChange(forget=("10.0.0.3", "10.0.0.5"), connect=("203.0.113.3",),
                                                    deleted=("node-e",))
    assert w.retell() == TargetChange(connect=("10.0.0.2", "203.0.113.3"), replace=True)


# ---- the annotations ---------------------------------------------------------------------------

def test_peer_list_is_weaves_json_byte_for_byte():
    cm = fixture("configmap-weave-net.json")["metadata"]["annotations"]
    assert pl.peer_list(cm) == (pl.PeerInfo(A, "node-a"), pl.PeerInfo(B, "node-b"), pl.PeerInfo(C, "node-c"),
                                pl.PeerInfo(D, "node-gone"))
    assert pl.encode_peer_list(pl.peer_list(cm)) == cm[pl.PEERS_KEY], "re-encoded exactly as stored"
    assert pl.encode_peer_list([pl.PeerInfo(A, "n1")]) == '{"Peers":[{"PeerName":"aa:00:00:00:00:01","NodeName":"n1"}]}'
    assert pl.encode_peer_list([]) == '{"Peers":[]}'
    assert pl.peer_list({pl.PEERS_KEY: '{"Peers":null}'}) == () == pl.peer_list({})
    for bad in ("not json", '{"Peers":[{"NodeName":"x"}]}', '["a"]'):
        with pytest.raises(RemoteProtocolError):
            pl.peer_list({pl.PEERS_KEY: bad})
    assert pl.claim_key(A) == "kube-peers.weave.works/aa_00_00_00_00_01"
    assert pl.clean_key("kube-peers.weave.works/a b:c@d") == "kube-peers.weave.works/a_b_c_d"


def test_register_reclaimable_claim_and_release():
    cm = fixture("configmap-weave-net.json")["metadata"]["annotations"]
    assert pl.with_peer(cm, A, "node-a") is None, "already there"
    joined = pl.with_peer(cm, "aa:00:00:00:00:0e", "node-e")
    assert pl.peer_list(joined)[-1] == pl.PeerInfo("aa:00:00:00:00:0e", "node-e")
    nodes = frozenset({"node-a", "node-b", "node-c"})
    assert [p.peer_name for p in pl.reclaimable(cm, nodes, A, "node-a")] == [D]
    assert [p.peer_name for p in pl.reclaimable(cm, nodes, "aa:00:00:00:00:0f", "node-a")] == [A, D], \
        "another peer on our node is an older us"
    assert [p.peer_name for p in pl.reclaimable(cm, nodes - {"node-b"}, B, "node-b")] == [D], "never ourselves"
    claimed = pl.with_claim(pl.with_claim(cm, D, A), C, D)  # A reclaims D; D was reclaiming C when it died
    assert pl.claimant(claimed, D) == A and pl.claimant(claimed, B) is None
    out = pl.released(claimed, D)
    assert pl.peer_list(out) == (pl.PeerInfo(A, "node-a"), pl.PeerInfo(B, "node-b"), pl.PeerInfo(C, "node-c"))
    assert set(out) == {pl.PEERS_KEY}, "the claim on D and D's own claim are gone"
    assert pl.released(out, D) == out, "releasing twice changes nothing"


# ---- the election, step by step ----------------------------------------------------------------

def read(annotations, version):
    return rc.ConfigMapRead(dict(annotations), str(version))


def base(*peers):
    return {pl.PEERS_KEY: pl.encode_peer_list([pl.PeerInfo(p, n) for p, n in peers])}


def test_a_pass_registers_claims_rmpeers_and_releases():
    m = rc.Reclaim(A, "node-a", random.Random(1))
    assert m.start() == rc.ReadConfigMap()
    cm = base((B, "node-b"), (D, "node-gone"))
    act = m.handle(read(cm, 5), 0)
    assert act == rc.WriteConfigMap(base((B, "node-b"), (D, "node-gone"), (A, "node-a")), "5"), "register"
    cm = act.annotations
    assert m.handle(read(cm, 6), 0) == rc.ListNodes()
    assert m.handle(rc.NodesListed(frozenset({"node-a", "node-b"})), 0) == rc.ReadConfigMap()
    act = m.handle(read(cm, 6), 0)
    assert act == rc.WriteConfigMap({**cm, pl.claim_key(D): A}, "6"), "claim D"
    assert m.handle(read(act.annotations, 7), 0) == rc.Rmpeer(D)
    assert m.handle(rc.RmpeerDone(1024), 0) == rc.ReadConfigMap()
    act = m.handle(read({**cm, pl.claim_key(D): A}, 7), 0)
    assert act == rc.WriteConfigMap(base((B, "node-b"), (A, "node-a")), "7"), "release"
    assert m.handle(read(act.annotations, 8), 0) == rc.ReadConfigMap(), "round 2"
    assert m.handle(read(act.annotations, 8), 0) == rc.ListNodes()
    assert m.handle(rc.NodesListed(frozenset({"node-a", "node-b"})), 0) == rc.Done((D,), ())
    assert m.state is rc.ReclaimState.DONE


def test_a_lost_claim_skips_the_peer_and_three_quiet_rounds_end_the_pass():
    m = rc.Reclaim(B, "node-b", random.Random(1), register=False)
    cm = base((A, "node-a"), (B, "node-b"), (D, "node-gone"))
    nodes = rc.NodesListed(frozenset({"node-a", "node-b"}))
    assert m.start() == rc.ReadConfigMap()
    m.handle(read(cm, 5), 0)
    m.handle(nodes, 0)
    assert isinstance(m.handle(read(cm, 5), 0), rc.WriteConfigMap)
    assert m.handle(rc.Conflict(), 0) == rc.ReadConfigMap(), "409: A wrote first; next round"
    held = {**cm, pl.claim_key(D): A}  # A's claim, and A is alive (in the list)
    for _ in range(2):
        assert m.handle(read(held, 6), 0) == rc.ListNodes()
        assert m.handle(nodes, 0) == rc.ReadConfigMap()
        assert m.handle(read(held, 6), 0) == rc.ReadConfigMap() or m.state is rc.ReclaimState.DONE
    assert m.state is rc.ReclaimState.DONE and m.skipped == [D, D, D] and m.reclaimed == []


def test_claims_of_the_dead_are_taken_over_and_our_own_resumed():
    cm = base((A, "node-a"), (D, "node-gone"), ("aa:00:00:00:00:0c", "node-gone2"))
    nodes = rc.NodesListed(frozenset({"node-a"}))
    m = rc.Reclaim(A, "node-a", random.Random(1), register=False)
    m.start()
    m.handle(read({**cm, pl.claim_key(D): A}, 3), 0)
    m.handle(nodes, 0)
    assert m.handle(read({**cm, pl.claim_key(D): A}, 3), 0) == rc.Rmpeer(D), "our claim (we restarted): go on"
    m2 = rc.Reclaim(A, "node-a", random.Random(1), register=False)
    dead_claimer = {**cm, pl.claim_key(D): "aa:00:00:00:00:77"}  # its claimer is not in the list
    m2.start()
    m2.handle(read(dead_claimer, 3), 0)
    m2.handle(nodes, 0)
    assert m2.handle(read(dead_claimer, 3), 0) == rc.WriteConfigMap({**cm, pl.claim_key(D): A}, "3")


def test_release_conflicts_wait_a_jittered_period_and_errors_end_the_pass():
    m = rc.Reclaim(A, "node-a", random.Random(7), register=False, retry_period_s=2.0)
    cm = {**base((A, "node-a"), (D, "gone")), pl.claim_key(D): A}
    m.start()
    m.handle(read(cm, 1), 0)
    m.handle(rc.NodesListed(frozenset({"node-a"})), 0)
    m.handle(read(cm, 1), 0)
    assert m.handle(rc.RmpeerDone(0), 0) == rc.ReadConfigMap()
    assert isinstance(m.handle(read(cm, 1), 0), rc.WriteConfigMap)
    wait = m.handle(rc.Conflict(), 100.0)
    assert isinstance(wait, rc.Wait) and 102.0 <= wait.until < 104.0, "period + up to one more (jitter 1.0)"
    assert m.handle(rc.Tick(), wait.until) == rc.ReadConfigMap()
    # rmpeer failing ends the pass (Weave returns the error); a garbled list too
    m = rc.Reclaim(A, "node-a", random.Random(1), register=False)
    m.start()
    m.handle(read(cm, 1), 0)
    m.handle(rc.NodesListed(frozenset({"node-a"})), 0)
    m.handle(read(cm, 1), 0)
    assert m.handle(rc.Failed("ipam down"), 0) == rc.Done((), (), f"rmpeer {D}: ipam down")
    m = rc.Reclaim(A, "node-a", random.Random(1))
    m.start()
    done = m.handle(read({pl.PEERS_KEY: "garbage"}, 1), 0)
    assert isinstance(done, rc.Done) and "not a peer list" in done.error
    m = rc.Reclaim(A, "node-a", random.Random(1))
    m.start()
    assert m.handle(rc.Tick(), 0).error == "unexpected Tick while reading the peer list to join it"


# ---- many nodes at once ------------------------------------------------------------------------

class Cluster:
    """The ConfigMap with optimistic concurrency, the Node list, and every rmpeer made."""

    def __init__(self, live: list[tuple[str, str]], dead: list[tuple[str, str]]) -> None:
        self.annotations = base(*live, *dead)
        self.version = 1
        self.nodes = frozenset(n for _, n in live)
        self.rmpeers: list[tuple[str, str]] = []  # (by, peer)

    def perform(self, by: str, action, now: float):
        if isinstance(action, rc.ReadConfigMap):
            return read(self.annotations, self.version), now
        if isinstance(action, rc.ListNodes):
            return rc.NodesListed(self.nodes), now
        if isinstance(action, rc.WriteConfigMap):
            if action.resource_version != str(self.version):
                return rc.Conflict(), now
            self.annotations, self.version = dict(action.annotations), self.version + 1
            return read(self.annotations, self.version), now
        if isinstance(action, rc.Rmpeer):
            self.rmpeers.append((by, action.peer_name))
            return rc.RmpeerDone(1), now
        if isinstance(action, rc.Wait):
            return rc.Tick(), max(now, action.until)
        raise AssertionError(action)


@settings(max_examples=300, deadline=None)
@given(n_live=st.integers(2, 5), n_dead=st.integers(1, 3), seed=st.integers(0, 2**32), restarts=st.booleans())
def test_every_dead_peer_is_reclaimed_by_exactly_one_node(n_live, n_dead, seed, restarts):
    rng = random.Random(seed)
    live = [(f"aa:00:00:00:01:{i:02x}", f"node-{i}") for i in range(n_live)]
    dead = [(f"aa:00:00:00:02:{i:02x}", f"gone-{i}") for i in range(n_dead)]
    cluster = Cluster(live, dead)
    machines = {me: rc.Reclaim(me, node, random.Random(rng.random()), register=False) for me, node in live}
    pending = {me: m.start() for me, m in machines.items()}
    now, steps = 0.0, 0
    while pending:
        steps += 1
        assert steps < 10_000, "the passes must end"
        me = rng.choice(sorted(pending))
        if restarts and rng.random() < 0.02:  # the node's pod restarts mid-pass: a new pass
            node = dict(live)[me]
            machines[me] = rc.Reclaim(me, node, random.Random(rng.random()), register=False)
            pending[me] = machines[me].start()
            continue
        event, now = cluster.perform(me, pending[me], now)
        action = machines[me].handle(event, now)
        if isinstance(action, rc.Done):
            assert action.error == ""
            del pending[me]
        else:
            pending[me] = action
    for peer, _ in dead:
        by = {b for b, p in cluster.rmpeers if p == peer}
        assert len(by) == 1, f"{peer} reclaimed by {by}"
        if not restarts:
            assert [p for _, p in cluster.rmpeers].count(peer) == 1
    assert not {p for _, p in cluster.rmpeers} & {p for p, _ in live}, "a live peer was reclaimed"
    assert pl.peer_list(cluster.annotations) == tuple(pl.PeerInfo(p, n) for p, n in live)
    assert set(cluster.annotations) == {pl.PEERS_KEY}, "no claim left behind"


# ---- readiness -----------------------------------------------------------------------------------

def topo(*peers):
    return TopologyEvent(ourself=A, peers=(MeshPeer(name=A, nickname="node-a", uid=1, short_id=1, reachable=True),
                                           *peers))


def peer(name, nick, reachable=True, address=""):
    return MeshPeer(name=name, nickname=nick, uid=2, short_id=2, reachable=reachable, address=address)


def test_readiness_needs_every_other_nodes_peer_and_a_ready_ipam():
    nodes = {n.name: n for n in (NodeInfo("node-a", "10.0.0.1"), NodeInfo("node-b", "10.0.0.2"),
                                 NodeInfo("node-c", "10.0.0.3"), NodeInfo("node-d", ""))}
    both = topo(peer(B, "other-nick", address="10.0.0.2"), peer(C, "node-c"))  # by address; by nickname
    r = readiness(synced=True, nodes=nodes, my_node="node-a", topology=both, ipam_status="ready")
    assert (r.ready, r.reason, r.missing) == (True, "ready", ())
    r = readiness(synced=True, nodes=nodes, my_node="node-a", topology=topo(peer(B, "node-b", reachable=False),
                                                                             peer(C, "node-c")),
                  ipam_status="awaiting consensus (quorum: 2, known: 1)")
    assert not r.ready and r.missing == ("node-b",)
    assert r.reason == ("not yet in the mesh: the peers of 1 of 2 other nodes (node-b); "
                        "ipam: awaiting consensus (quorum: 2, known: 1)")
    r = readiness(synced=False, nodes={}, my_node="node-a", topology=None, ipam_status=None)
    assert r.reason == ("no Node list from the API server yet; the gossip service does not answer; "
                        "ipam does not answer")
    alone = {"node-a": NodeInfo("node-a", "10.0.0.1")}
    assert readiness(synced=True, nodes=alone, my_node="node-a", topology=topo(), ipam_status="ready").ready


def test_fixture_configmap_is_the_apis_shape():
    cm = fixture("configmap-weave-net.json")
    assert (cm["kind"], cm["metadata"]["namespace"], cm["metadata"]["name"]) == ("ConfigMap", "kube-system",
                                                                               "weave-net")
    json.loads(cm["metadata"]["annotations"][pl.PEERS_KEY])
