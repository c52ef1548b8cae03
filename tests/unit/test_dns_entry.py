"""weaveDNS entries: identity, the two orders, per-entry merge, GossipData merge."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.dns.entry import DnsEntry, GossipData, merge_entry
from shared.weave.peer_name import PeerName
from shared.errors import LocalProtocolError

P1, P2 = PeerName(1), PeerName(2)


def e(host="a.weave.local.", origin=P1, cid="c1", addr=0x0A200001, version=0, tombstone=0):
    return DnsEntry(cid, origin, addr, host, version, tombstone)


def test_identity_ignores_state_and_keeps_hostname_case():
    assert e(version=3, tombstone=9).key == e().key == ("a.weave.local.", 1, "c1", 0x0A200001)
    assert e(host="A.weave.local.").key != e().key


def test_stored_order_is_case_insensitive_and_wire_order_case_sensitive():
    items = [e(host="b.x."), e(host="B.x.", origin=P2), e(host="a.x.", addr=2),
             e(host="A.x."), e(host="a.x.", addr=1), e(host="a.x.", cid="c0", addr=9)]
    stored = [(x.hostname, int(x.origin), x.container_id, x.addr)
              for x in sorted(items, key=DnsEntry.sort_key)]
    assert stored == [("a.x.", 1, "c0", 9), ("a.x.", 1, "c1", 1), ("a.x.", 1, "c1", 2),
                      ("A.x.", 1, "c1", 0x0A200001),
                      ("b.x.", 1, "c1", 0x0A200001), ("B.x.", 2, "c1", 0x0A200001)]
    wire = [x.hostname for x in sorted(items, key=DnsEntry.wire_sort_key)]
    assert wire == ["A.x.", "B.x.", "a.x.", "a.x.", "a.x.", "b.x."]


@pytest.mark.parametrize("mine, theirs, winner", [
    ((0, 0), (1, 0), (1, 0)),          # higher version wins
    ((2, 0), (1, 500), (2, 0)),        # ... even against a tombstone
    ((1, 100), (1, 200), (1, 200)),    # equal version: larger tombstone wins
    ((1, 200), (1, 0), (1, 200)),
    ((3, 7), (3, 7), (3, 7)),
])
def test_merge_entry_table(mine, theirs, winner):
    got = merge_entry(e(version=mine[0], tombstone=mine[1]), e(version=theirs[0], tombstone=theirs[1]))
    assert (got.version, got.tombstone) == winner


def test_merge_entry_refuses_different_identities():
    with pytest.raises(LocalProtocolError):
        merge_entry(e(), e(addr=5))


def test_tombstone_and_revive_bump_the_version():
    t = e(version=4).tombstoned(1000)
    assert (t.version, t.tombstone, t.live) == (5, 1000, False)
    r = t.revived()
    assert (r.version, r.tombstone, r.live) == (6, 0, True)
    with pytest.raises(LocalProtocolError):
        e().tombstoned(0)


def test_status_and_api_json_shapes():
    x = e(host="alpha.weave.local.", origin=PeerName.parse("aa:00:00:00:00:01"),
          version=1, tombstone=1795982695)
    assert x.to_status() == {"Hostname": "alpha.weave.local.", "Origin": "aa:00:00:00:00:01",
                             "ContainerID": "c1", "Address": "10.32.0.1", "Version": 1,
                             "Tombstone": 1795982695}
    assert x.to_api_json() == {"ContainerID": "c1", "Origin": 186916976721921,
                               "Addr": "10.32.0.1", "Hostname": "alpha.weave.local.",
                               "Version": 1, "Tombstone": 1795982695}


def test_gossip_data_of_merges_duplicates_and_sorts():
    g = GossipData.of(10, [e(host="b."), e(host="a.", version=1), e(host="a.", version=2)])
    assert [(x.hostname, x.version) for x in g.entries] == [("a.", 2), ("b.", 0)]


def test_gossip_data_merge_keeps_winners_and_latest_timestamp():
    a = GossipData.of(10, [e(host="a.", version=1), e(host="b.")])
    b = GossipData.of(20, [e(host="a.", version=0), e(host="c.", tombstone=5, version=1)])
    m = a.merge(b)
    assert m.timestamp == 20
    assert [(x.hostname, x.version, x.tombstone) for x in m.entries] == [
        ("a.", 1, 0), ("b.", 0, 0), ("c.", 1, 5)]


entries = st.builds(
    DnsEntry,
    container_id=st.sampled_from(["c1", "c2"]),
    origin=st.sampled_from([P1, P2]),
    addr=st.sampled_from([1, 2]),
    hostname=st.sampled_from(["a.x.", "A.x.", "b.x."]),
    version=st.integers(0, 3),
    tombstone=st.sampled_from([0, 100, 200]),
)
gossips = st.builds(GossipData.of, st.integers(0, 50), st.lists(entries, max_size=8))


@settings(max_examples=150, deadline=None)
@given(gossips, gossips, gossips)
def test_gossip_data_merge_is_a_semilattice(a, b, c):
    assert a.merge(b) == b.merge(a)
    assert a.merge(b).merge(c) == a.merge(b.merge(c))
    assert a.merge(a) == a
    assert a.merge(b).merge(b) == a.merge(b)
