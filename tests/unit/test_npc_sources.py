"""The gossiped policy/pod store: merge laws (tables and properties), local writes, a
host's authority over its own pods, removed peers, the wire codec and persistence."""
from __future__ import annotations

import json
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.npc.sources import (PULL, StoreEntry, PolicyStore, PolicySources, decode, encode, encode_chunks, pod_key,
                                  policy_key, split_key)
from shared.errors import RemoteProtocolError
from shared.schemas.datapath import ContainerEvent
from shared.weave.peer_name import PeerName

A, B, C = "aa:00:00:00:00:01", "aa:00:00:00:00:02", "aa:00:00:00:00:03"
N = PeerName.parse  # a host is a PeerName; keys and entries name it in its wire form (A, B, C)
K = policy_key("default", "web")
V1, V2 = {"spec": {"podSelector": {}}}, {"spec": {"podSelector": {"matchLabels": {"app": "web"}}}}


def E(version, origin, value, key=K):
    return StoreEntry(key, version, origin, value)


def state(*entries):
    s = PolicyStore()
    s.merge(entries)
    return s


# ---- merge: who wins, and what is returned -------------------------------------------------

@pytest.mark.parametrize("held, incoming, winner, returned", [
    (None, E(1, A, V1), E(1, A, V1), True),                        # new key
    (E(1, A, V1), E(2, B, V2), E(2, B, V2), True),                # higher version wins
    (E(2, B, V2), E(1, A, V1), E(2, B, V2), False),               # lower version loses
    (E(1, A, V1), E(1, B, V2), E(1, B, V2), True),                # same version: greater origin
    (E(1, B, V2), E(1, A, V1), E(1, B, V2), False),
    (E(1, A, V1), E(1, A, V1), E(1, A, V1), False),               # the same entry: nothing new
    (E(1, A, V1), E(2, A, None), E(2, A, None), True),            # a tombstone is a version like any
    (E(3, A, None), E(2, B, V2), E(3, A, None), False),           # a late write does not resurrect
])
def test_merge_keeps_the_greatest_and_returns_only_what_is_new(held, incoming, winner, returned):
    s = state(held) if held else PolicyStore()
    new = s.merge([incoming])
    assert s.entries[K] == winner
    assert new == ([winner] if returned else None)


def test_same_version_and_origin_with_different_values_is_broken_by_digest():
    """A host that lost its state may write one (version, origin) twice; every host
    must still agree, so the digest of the value decides."""
    x, y = E(1, A, V1), E(1, A, V2)
    winner = max(x, y, key=lambda e: e.rank)
    assert state(x, y).entries[K] == state(y, x).entries[K] == winner


def test_merge_of_many_keys_returns_each_key_once():
    s = PolicyStore()
    k2 = policy_key("default", "db")
    new = s.merge([E(1, A, V1), E(2, A, V2), E(1, A, V1, key=k2)])
    assert new == [E(2, A, V2), E(1, A, V1, key=k2)]


entries_st = st.builds(
    StoreEntry, key=st.sampled_from([K, policy_key("x", "y"), pod_key(A, "c1")]), version=st.integers(1, 4),
    origin=st.sampled_from([A, B, C]), value=st.sampled_from([None, V1, V2]))


@given(st.lists(entries_st, max_size=8), st.lists(entries_st, max_size=8), st.lists(entries_st, max_size=8))
def test_merge_is_idempotent_commutative_and_associative(xs, ys, zs):
    def merged(*groups):
        s = PolicyStore()
        for group in groups:
            s.merge(group)
        return s.entries

    assert merged(xs, xs) == merged(xs)
    assert merged(xs, ys) == merged(ys, xs)
    assert merged(merged(xs, ys).values(), zs) == merged(xs, merged(ys, zs).values())
    assert merged(xs + ys + zs) == merged(list(reversed(xs + ys + zs)))


@given(st.lists(entries_st, max_size=10))
def test_what_merge_returns_is_exactly_what_changed(xs):
    s = PolicyStore()
    for x in xs:
        before = dict(s.entries)
        new = s.merge([x]) or []
        assert {e.key for e in new} == {k for k in s.entries if s.entries[k] != before.get(k)}


# ---- local writes ------------------------------------------------------------------------------

def test_writes_bump_the_version_and_skip_no_ops():
    s = PolicyStore()
    assert s.write(K, V1, A) == E(1, A, V1)
    assert s.write(K, V1, B) is None, "the same value again changes nothing"
    assert s.write(K, V2, B) == E(2, B, V2)
    assert s.write(K, None, A) == E(3, A, None)
    assert s.write(K, None, A) is None
    assert s.write(policy_key("a", "b"), None, A) is None, "deleting what never was"
    assert [e.key for e in s.live()] == []


def test_put_and_delete_through_the_sources():
    src = PolicySources(N(A))
    assert src.put(K, V1).version == 1
    assert src.delete(K) == E(2, A, None)
    assert src.delete(K) is None
    assert src.put(K, V1) == E(3, A, V1), "re-created above the tombstone"


# ---- pods: the host is the authority on its own -------------------------------------------------

def ev(cid, kind="attached", cidrs=("10.32.0.1/12",), labels=None, namespace="default"):
    return ContainerEvent(kind=kind, container_id=cid, cidrs=cidrs if kind == "attached" else (),
                          labels=labels or {}, namespace=namespace)


def test_container_events_become_pod_entries():
    src = PolicySources(N(A))
    [e1] = src.container_event(ev("c1", labels={"app": "web"}))
    assert e1 == StoreEntry(pod_key(A, "c1"), 1, A, {"cidrs": ["10.32.0.1/12"], "labels": {"app": "web"},
                                                 "namespace": "default"})
    assert src.container_event(ev("c1", labels={"app": "web"})) == [], "nothing changed"
    [e2] = src.container_event(ev("c1", labels={"app": "db"}))
    assert e2.version == 2 and e2.value["labels"] == {"app": "db"}
    [e3] = src.container_event(ev("c1", kind="detached"))
    assert e3.tombstone and e3.version == 3 and src.own_pods == {}
    assert src.container_event(ev("weave:expose")) == [], "the bridge's own address is not a pod"


def test_a_snapshot_replaces_our_pods():
    src = PolicySources(N(A))
    src.container_event(ev("c1"))
    src.container_event(ev("c2", cidrs=("10.32.0.2/12",)))
    changed = src.container_snapshot([ev("c2", cidrs=("10.32.0.2/12",)), ev("c3", cidrs=("10.32.0.3/12",))])
    assert sorted((e.key, e.tombstone) for e in changed) == [(pod_key(A, "c1"), True), (pod_key(A, "c3"), False)]


def test_gossip_about_our_own_pods_is_corrected():
    src = PolicySources(N(A))
    src.container_event(ev("c1"))
    # a peer tombstoned our pod (we were removed from its topology while away)
    changed, corrections = src.receive([StoreEntry(pod_key(A, "c1"), 2, B, None)])
    assert corrections == [StoreEntry(pod_key(A, "c1"), 3, A, src.own_pods["c1"])]
    assert changed[-1] == corrections[0] and not src.state.entries[pod_key(A, "c1")].tombstone
    # our state was lost and an old pod of ours comes back from a peer: we tombstone it
    changed, corrections = src.receive([StoreEntry(pod_key(A, "old"), 7, A, {"cidrs": [], "labels": {}})])
    assert corrections == [StoreEntry(pod_key(A, "old"), 8, A, None)]
    # others' pods are merged and not touched
    changed, corrections = src.receive([StoreEntry(pod_key(B, "c9"), 1, B, {"cidrs": ["10.32.0.9/12"]})])
    assert corrections == [] and [e.key for e in changed] == [pod_key(B, "c9")]


def test_pods_of_removed_peers_are_tombstoned_but_never_ours():
    src = PolicySources(N(A))
    src.container_event(ev("c1"))
    src.receive([StoreEntry(pod_key(B, "c2"), 4, B, {"cidrs": ["10.32.0.2/12"]}),
                 StoreEntry(pod_key(C, "c3"), 1, C, {"cidrs": ["10.32.0.3/12"]})])
    changed = src.peers_removed([N(B), N(A)])
    assert changed == [StoreEntry(pod_key(B, "c2"), 5, A, None)]
    assert src.peers_removed([N(B)]) == []
    assert {e.key for e in src.state.live()} == {pod_key(A, "c1"), pod_key(C, "c3")}


def test_two_hosts_converge_whatever_the_order():
    a, b = PolicySources(N(A)), PolicySources(N(B))
    ea = [a.put(K, V1), *a.container_event(ev("c1"))]
    eb = [b.put(K, V2), b.put(policy_key("x", "y"), V1), *b.container_event(ev("c2"))]
    a.receive(eb)
    b.receive(ea)
    assert a.state.entries == b.state.entries
    assert a.state.entries[K] == E(1, B, V2), "both wrote version 1: the greater origin wins"


# ---- keys and the wire -------------------------------------------------------------------

@pytest.mark.parametrize("key, parts", [
    ("NetworkPolicy/default/web", ("NetworkPolicy", "default", "web")),
    ("Namespace/other", ("Namespace", "", "other")),
    ("Pod/aa:00:00:00:00:01/c1", ("Pod", "aa:00:00:00:00:01", "c1")),
    ("Pod/aa:00:00:00:00:01//var/run/netns/x", ("Pod", "aa:00:00:00:00:01", "/var/run/netns/x")),
])
def test_keys(key, parts):
    assert split_key(key) == parts


@pytest.mark.parametrize("key", ["", "NetworkPolicy/web", "NetworkPolicy/a/b/c", "Namespace/a/b", "Service/a/b",
                                 "Pod/peer/", "Pod//c1"])
def test_bad_keys(key):
    with pytest.raises(RemoteProtocolError):
        split_key(key)


def test_codec_round_trip_and_chunks():
    entries = [E(1, A, V1), E(2, B, None, key=pod_key(B, "c1"))]
    assert decode(encode(entries)) == entries
    many = [E(1, A, V1, key=policy_key("ns", f"p{i}")) for i in range(25)]
    chunks = encode_chunks(many, per_message=10)
    assert len(chunks) == 3 and [e for c in chunks for e in decode(c)] == many
    assert encode_chunks([]) == []


@pytest.mark.parametrize("payload", [
    b"", PULL, b"\x01not zlib", b"\x09" + zlib.compress(b"[]"),
    b"\x01" + zlib.compress(b'{"a": 1}'),
    b"\x01" + zlib.compress(json.dumps([["Service/x/y", 1, A, None]]).encode()),
    b"\x01" + zlib.compress(json.dumps([[K, 0, A, None]]).encode()),
    b"\x01" + zlib.compress(json.dumps([[K, True, A, None]]).encode()),
    b"\x01" + zlib.compress(json.dumps([[K, 1, A, [1, 2]]]).encode()),
    b"\x01" + zlib.compress(json.dumps([[K, 1, A]]).encode()),
])
def test_garbage_is_a_remote_protocol_error(payload):
    with pytest.raises(RemoteProtocolError) as err:
        decode(payload)
    assert err.value.code == "bad_gossip"


def test_snapshot_and_restore():
    src = PolicySources(N(A))
    src.put(K, V1)
    src.container_event(ev("c1"))
    data = json.loads(json.dumps(src.snapshot()))
    assert data["ourself"] == A, "the file names us in the wire form"
    again = PolicySources(N(A))
    assert {e.key for e in again.restore(data)} == {K, pod_key(A, "c1")}
    assert again.state.entries == src.state.entries and again.own_pods == src.own_pods
    renamed = PolicySources(N(B))
    renamed.restore(data)
    assert renamed.own_pods == {}, "another peer name: those pods are not ours"
