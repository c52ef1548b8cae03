"""Route tables for hand-made topologies; expected next hops worked out by hand from
mesh's BFS rules (levels in PeerName order, first parent wins)."""
import random

import pytest

from services.gossip.peer import ConnectionSummary, LocalPeer, Peer
from shared.weave.peer_name import UNKNOWN_PEER_NAME, PeerName, PeerUID
from services.gossip.peers import Peers
from services.gossip.routes import Routes, peer_routes

N = PeerName


def link(records, a, b, a_est=True, b_est=True, a_lists=True, b_lists=True):
    """Connection a<->b; each end's listing and established flag set separately."""
    if a_lists:
        records[a].connections[N(b)] = ConnectionSummary(N(b), f"10.0.0.{b}:6783", True, a_est)
    if b_lists:
        records[b].connections[N(a)] = ConnectionSummary(N(a), f"10.0.0.{a}:6783", False, b_est)


def topology(n, edges, ourself=1):
    """Peers 1..n as seen by `ourself`, with symmetric established `edges`."""
    records = {i: Peer(N(i), f"p{i}", PeerUID(i), 1, i, True) for i in range(1, n + 1)}
    records[ourself] = LocalPeer(N(ourself), f"p{ourself}", PeerUID(ourself), 1, ourself, True)
    for a, b in edges:
        link(records, a, b)
    return records


def routes_from(records, ourself):
    peers = Peers(records[ourself], random.Random(0))
    peers.by_name.update({N(i): p for i, p in records.items()})
    routes = Routes(peers)
    routes.recalculate()
    return routes


def table(records, start, symmetric=True):
    by_name = {N(i): p for i, p in records.items()}
    return {int(k): int(v) for k, v in peer_routes(by_name, N(start), symmetric)[1].items()}


LINE = [(1, 2), (2, 3), (3, 4), (4, 5)]
RING = [(1, 2), (2, 3), (3, 4), (4, 5), (5, 6), (6, 1)]
STAR = [(5, 1), (5, 2), (5, 3), (5, 4)]
MESH = [(1, 2), (1, 3), (2, 4), (3, 4), (4, 5), (3, 5), (5, 6)]


@pytest.mark.parametrize(
    "n,edges,start,expected",
    [
        (5, LINE, 1, {1: 0, 2: 2, 3: 2, 4: 2, 5: 2}),
        (5, LINE, 3, {3: 0, 2: 2, 4: 4, 1: 2, 5: 4}),
        # ring: 4 is two hops both ways; reached first from 3 (lower than 5) -> via 2
        (6, RING, 1, {1: 0, 2: 2, 6: 6, 3: 2, 5: 6, 4: 2}),
        (6, RING, 4, {4: 0, 3: 3, 5: 5, 2: 3, 6: 5, 1: 3}),
        (5, STAR, 1, {1: 0, 5: 5, 2: 5, 3: 5, 4: 5}),
        (5, STAR, 5, {5: 0, 1: 1, 2: 2, 3: 3, 4: 4}),
        # 4 is reachable from 2 and 3 at the same level: the lower parent (2) wins;
        # 5 is reachable from 3 (level 1) before 4 (level 2)
        (6, MESH, 1, {1: 0, 2: 2, 3: 3, 4: 2, 5: 3, 6: 3}),
        (6, MESH, 6, {6: 0, 5: 5, 3: 5, 4: 5, 1: 5, 2: 5}),
    ],
)
def test_unicast_tables(n, edges, start, expected):
    records = topology(n, edges, ourself=start)
    assert table(records, start) == expected
    routes = routes_from(records, start)
    assert {int(k): int(v) for k, v in routes.unicast_table().items()} == expected
    assert routes.unicast(N(start)) == UNKNOWN_PEER_NAME


@pytest.mark.parametrize(
    "n,edges,source,hops",
    [
        # line: each peer passes a broadcast from 1 on to the next one
        (5, LINE, 1, {1: [2], 2: [3], 3: [4], 4: [5], 5: []}),
        (5, LINE, 3, {3: [2, 4], 2: [1], 4: [5], 1: [], 5: []}),
        # ring from 1: 4 gets it from 3 only (5's BFS already reached 4 via 3)
        (6, RING, 1, {1: [2, 6], 2: [3], 6: [5], 3: [4], 5: [], 4: []}),
        (5, STAR, 1, {1: [5], 5: [2, 3, 4], 2: [], 3: [], 4: []}),
        (6, MESH, 6, {6: [5], 5: [3, 4], 3: [1], 4: [2], 1: [], 2: []}),
        (6, MESH, 1, {1: [2, 3], 2: [4], 3: [5], 4: [], 5: [6], 6: []}),
    ],
)
def test_broadcast_hops(n, edges, source, hops):
    for me, expected in hops.items():
        routes = routes_from(topology(n, edges, ourself=me), me)
        assert [int(h) for h in routes.broadcast(N(source))] == expected, me
        assert [int(h) for h in routes.broadcast_all(N(source))] == expected, me


@pytest.mark.parametrize("n,edges", [(5, LINE), (6, RING), (5, STAR), (6, MESH)])
def test_broadcast_reaches_everyone_exactly_once(n, edges):
    views = {me: routes_from(topology(n, edges, ourself=me), me) for me in range(1, n + 1)}
    for source in range(1, n + 1):
        received = {i: 0 for i in range(1, n + 1)}
        todo = [source]
        while todo:
            at = todo.pop()
            for hop in views[at].broadcast(N(source)):
                received[int(hop)] += 1
                todo.append(int(hop))
        assert received == {i: int(i != source) for i in range(1, n + 1)}


def asymmetric():
    """1-2 fine; 1 lists 3 but 3 does not list 1; 2 lists 4 established, 4 lists 2
    unestablished; 4-5 fine; 6 lists 1 but 1 does not list 6."""
    records = topology(6, [(4, 5)])
    link(records, 1, 2)
    link(records, 1, 3, b_lists=False)
    link(records, 2, 4, b_est=False)
    link(records, 6, 1, b_lists=False)
    return records


def test_asymmetric_and_unestablished_links():
    records = asymmetric()
    assert table(records, 1, symmetric=True) == {1: 0, 2: 2}
    # all connections, in the direction they are listed: 6 -> 1 is not usable from 1
    assert table(records, 1, symmetric=False) == {1: 0, 2: 2, 3: 3, 4: 2, 5: 2}
    routes = routes_from(records, 1)
    assert routes.unicast(N(4)) is None and routes.unicast_all(N(4)) == N(2)
    assert routes.unicast(N(6)) is None and routes.unicast_all(N(6)) is None
    assert routes.broadcast(N(1)) == [N(2)]
    assert routes.broadcast_all(N(1)) == [N(2), N(3)]


def test_unestablished_on_our_side_excluded_from_symmetric():
    records = topology(3, [(1, 3)])
    link(records, 1, 2, a_est=False)
    assert table(records, 1, symmetric=True) == {1: 0, 3: 3}
    assert table(records, 1, symmetric=False) == {1: 0, 2: 2, 3: 3}


def test_broadcast_from_unknown_or_unreachable_source_has_no_hops():
    records = topology(4, [(1, 2), (3, 4)])
    routes = routes_from(records, 1)
    assert routes.broadcast(N(99)) == []
    assert routes.broadcast(N(3)) == []  # 3's BFS never reaches us


def test_recalculation_is_explicit_and_coalesced():
    records = topology(3, [(1, 2)])
    routes = routes_from(records, 1)
    link(records, 2, 3)
    assert routes.unicast(N(3)) is None  # stale until recalculated
    assert routes.request_recalculate() is True
    assert routes.request_recalculate() is False  # coalesced into the pending one
    routes.ensure_recalculated()
    assert routes.unicast(N(3)) == N(2) and not routes.stale


def test_broadcast_cache_dropped_on_recalculate():
    records = topology(3, [(1, 2), (2, 3)])
    routes = routes_from(records, 2)
    assert routes.broadcast(N(1)) == [N(3)]
    del records[2].connections[N(3)]
    assert routes.broadcast(N(1)) == [N(3)]  # cached
    routes.recalculate()
    assert routes.broadcast(N(1)) == []


def test_status_matches_report_shape():
    routes = routes_from(topology(3, [(1, 2), (1, 3)]), 1)
    routes.broadcast(N(2))
    assert routes.status() == {
        "UnicastRoutes": [
            {"Dest": "00:00:00:00:00:01", "Via": "00:00:00:00:00:00"},
            {"Dest": "00:00:00:00:00:02", "Via": "00:00:00:00:00:02"},
            {"Dest": "00:00:00:00:00:03", "Via": "00:00:00:00:00:03"},
        ],
        "BroadcastRoutes": [
            {"Source": "00:00:00:00:00:01", "Via": ["00:00:00:00:00:02", "00:00:00:00:00:03"]},
            {"Source": "00:00:00:00:00:02", "Via": ["00:00:00:00:00:03"]},
        ],
    }
    routes.broadcast(N(3))
    routes_leaf = routes_from(topology(3, [(1, 2), (1, 3)], ourself=2), 2)
    routes_leaf.broadcast(N(3))
    assert routes_leaf.status()["BroadcastRoutes"][1] == {"Source": "00:00:00:00:00:03", "Via": None}


def star_around_us(leaves, tail):
    """Us (1) with neighbours 2..leaves+1; neighbour 2 leads to `tail` more peers."""
    n = 1 + leaves + tail
    edges = [(1, i) for i in range(2, leaves + 2)]
    edges += [(2, i) for i in range(leaves + 2, n + 1)]
    return routes_from(topology(n, edges), 1)


def test_random_neighbours_count_and_exclusion():
    routes = star_around_us(8, 0)  # 9 peers: 2*log2(9) = 6.3 -> 6 of 8
    for seed in range(20):
        chosen = routes.random_neighbours(N(1), random.Random(seed))
        assert len(chosen) == len(set(chosen)) == 6
        assert set(chosen) <= {N(i) for i in range(2, 10)}
        excluded = routes.random_neighbours(N(3), random.Random(seed))
        assert N(3) not in excluded and len(excluded) == 6
    line = routes_from(topology(5, LINE, ourself=3), 3)  # 2 neighbours, all chosen
    assert sorted(line.random_neighbours(N(3), random.Random(1))) == [N(2), N(4)]
    assert line.random_neighbours(N(2), random.Random(1)) == [N(4)]
    assert routes_from(topology(1, []), 1).random_neighbours(N(1), random.Random(1)) == []


def test_random_neighbours_favour_bottleneck_links():
    # 15 peers: 2*log2(15) = 7.8 -> 7 of our 8 neighbours; 2 carries 7 of 14 routes
    routes = star_around_us(8, 6)
    picks = [routes.random_neighbours(N(1), random.Random(seed)) for seed in range(300)]
    assert all(len(p) == 7 for p in picks)
    heavy = sum(N(2) in p for p in picks)
    light = [sum(N(i) in p for p in picks) for i in range(3, 10)]
    assert heavy >= 295 and max(light) < 290
