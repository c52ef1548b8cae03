"""Many Router cores over the in-memory network: mesh formation, discovery, gossip
relaying, duplicates, passwords, partitions. Manual clock, no sleeps."""
from __future__ import annotations

import pytest

from services.gossip.connection import ConnState
from tests.cluster.meshnet import MeshNet


def established(router) -> set[str]:
    return {str(c.remote.name) for c in router.conns.values() if c.state is ConnState.ESTABLISHED}


def build(n: int, **kw) -> tuple[MeshNet, list[str]]:
    net = MeshNet()
    ips = [net.add(i, **kw) for i in range(1, n + 1)]
    return net, ips


def test_chain_with_discovery_becomes_full_mesh():
    net, ips = build(6)
    for a, b in zip(ips, ips[1:]):
        net.connect(a, [b])
    net.run(60)
    for ip in ips:
        r = net.routers[ip]
        assert len(established(r)) == 5, (ip, established(r))
        assert len(r.peers) == 6
        assert len(r.ourself.connections) == 5
    # every router computes the same unicast next hop to every other: itself (direct)
    for ip in ips:
        table = net.routers[ip].routes.unicast_table()
        assert all(dest == via for dest, via in table.items() if dest != net.routers[ip].config.name)


def test_chain_without_discovery_relays_topology():
    net, ips = build(4, discovery=False)
    for a, b in zip(ips, ips[1:]):
        net.connect(a, [b])
    net.run(60)
    first, last = net.routers[ips[0]], net.routers[ips[-1]]
    assert len(established(first)) == 1
    assert len(first.peers) == 4, "topology of the far end arrived through the middle"
    # unicast to the last peer goes via the second
    assert first.routes.unicast(last.config.name) == net.routers[ips[1]].config.name


def test_simultaneous_dials_leave_one_connection():
    net, ips = build(2)
    net.connect(ips[0], [ips[1]])
    net.connect(ips[1], [ips[0]])
    net.run(30)
    a, b = (net.routers[ip] for ip in ips)
    assert len(a.conns) == 1 and len(b.conns) == 1
    assert established(a) == {str(b.config.name)}


@pytest.mark.parametrize("pw_a,pw_b", [(b"secret", b"secret"), (None, None)])
def test_password_agreement_connects(pw_a, pw_b):
    net = MeshNet()
    a, b = net.add(1, password=pw_a), net.add(2, password=pw_b)
    net.connect(a, [b])
    net.run(10)
    assert len(established(net.routers[a])) == 1


@pytest.mark.parametrize("pw_a,pw_b", [(b"secret", b"other"), (b"secret", None), (None, b"secret")])
def test_password_mismatch_is_refused_and_retried_with_backoff(pw_a, pw_b):
    net = MeshNet()
    a, b = net.add(1, password=pw_a), net.add(2, password=pw_b)
    net.connect(a, [b])
    net.run(30)
    ra = net.routers[a]
    assert established(ra) == set()
    assert ra.maker.termination_count >= 2, "it kept trying, with backoff"
    assert ra.maker.termination_count < 15, "backoff grows"


def test_partition_heals():
    net, ips = build(5)
    for a, b in zip(ips, ips[1:]):
        net.connect(a, [b])
    net.run(60)
    # split {1,2} from {3,4,5}
    for x in ips[:2]:
        for y in ips[2:]:
            net.sever(x, y)
    net.run(30)
    assert len(net.routers[ips[0]].peers) == 2, "unreachable peers are garbage collected"
    assert len(net.routers[ips[4]].peers) == 3
    for x in ips[:2]:
        for y in ips[2:]:
            net.heal(x, y)
    net.run(400)  # retry backoff may reach minutes
    for ip in ips:
        assert len(established(net.routers[ip])) == 4


def test_conn_limit():
    net, ips = build(4, conn_limit=1)
    net.connect(ips[0], ips[1:])
    net.run(20)
    assert len(net.routers[ips[0]].ourself.connections) == 1


def test_twenty_peers_random_links_converge_and_agree():
    """20+ full router cores (real handshakes, encryption) over random links, no discovery:
    every peer learns the whole topology and all compute the same routes."""
    import random

    from services.gossip.routes import peer_routes

    net = MeshNet(seed=7)
    ips = [net.add(i, password=b"pw", discovery=False) for i in range(1, 23)]
    rng = random.Random(3)
    for i, ip in enumerate(ips[1:], start=1):  # a random spanning tree plus extra links
        net.connect(ip, [ips[rng.randrange(i)]])
    for _ in range(15):
        a, b = rng.sample(ips, 2)
        net.connect(a, [b])
    net.run(120)
    truth = {r.config.name: r.ourself for r in net.routers.values()}
    for ip, r in net.routers.items():
        assert r.peers.names() == set(truth), f"{ip} misses peers"
        for name, peer in truth.items():
            assert r.peers.fetch(name).version == peer.version, f"{ip} has a stale record of {name}"
        _, expected = peer_routes(truth, r.config.name, symmetric=True)
        r.routes.ensure_recalculated()
        assert {d: v for d, v in r.routes.unicast_table().items()} == expected
