"""Channels owned by another local service: every peer's owner gets each message once,
relaying works through peers, unicasts reach only their destination, and a peer
without the channel's owner still relays (surrogate)."""
from __future__ import annotations

from tests.cluster.meshnet import MeshNet

CH = "nameserver"


def line(n: int, channels_at=None) -> tuple[MeshNet, list[str]]:
    net = MeshNet()
    ips = [net.add(i, discovery=False, bus_channels=(CH,) if (channels_at is None or i in channels_at) else ())
           for i in range(1, n + 1)]
    for a, b in zip(ips, ips[1:]):
        net.connect(a, [b])
    net.run(30)
    return net, ips


def kinds(net, ip):
    return [(d.kind, d.payload) for d in net.delivered.get(ip, [])]


def test_broadcast_reaches_every_owner_once():
    net, ips = line(4)
    net.apply(ips[0], net.routers[ips[0]].send_gossip(CH, "broadcast", b"entry-1", net.now))
    net.pump()
    for ip in ips[1:]:
        assert kinds(net, ip) == [("broadcast", b"entry-1")]
        assert net.delivered[ip][0].src == net.routers[ips[0]].config.name
    assert kinds(net, ips[0]) == [], "our own broadcast is not delivered back to us"


def test_gossip_is_relayed_once_and_deduplicated():
    net, ips = line(3)
    for _ in range(3):
        net.apply(ips[0], net.routers[ips[0]].send_gossip(CH, "gossip", b"state-A", net.now))
        net.pump()
    assert kinds(net, ips[2]) == [("gossip", b"state-A")], "relayed through the middle, once"


def test_unicast_only_at_destination():
    net, ips = line(3)
    dst = net.routers[ips[2]].config.name
    net.apply(ips[0], net.routers[ips[0]].send_gossip(CH, "unicast", b"ring-update", net.now, dst=dst))
    net.pump()
    assert kinds(net, ips[1]) == []
    assert kinds(net, ips[2]) == [("unicast", b"ring-update")]


def test_peer_without_owner_relays():
    net, ips = line(3, channels_at={1, 3})
    net.apply(ips[0], net.routers[ips[0]].send_gossip(CH, "broadcast", b"x", net.now))
    net.pump()
    assert kinds(net, ips[1]) == []
    assert kinds(net, ips[2]) == [("broadcast", b"x")]


def test_gossip_down_one_neighbour():
    net = MeshNet()
    ips = [net.add(i, bus_channels=(CH,)) for i in (1, 2, 3)]
    net.connect(ips[0], ips[1:])
    net.run(30)
    target = net.routers[ips[2]].config.name
    net.apply(ips[0], net.routers[ips[0]].send_gossip(CH, "gossip", b"catch-up", net.now, dst=target))
    net.pump()
    assert kinds(net, ips[2])[:1] == [("gossip", b"catch-up")]


TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_trace_context_follows_gossip_across_weave_py_peers():
    net, ips = line(3)
    net.apply(ips[0], net.routers[ips[0]].send_gossip(CH, "broadcast", b"traced", net.now, trace=TRACEPARENT))
    net.pump()
    for ip in ips[1:]:
        assert [d.trace for d in net.delivered[ip]] == [TRACEPARENT], ip
    net.apply(ips[0], net.routers[ips[0]].send_gossip(CH, "broadcast", b"untraced", net.now))
    net.pump()
    assert net.delivered[ips[2]][-1].trace is None, "a later message does not inherit the old trace"


def test_no_trace_messages_to_peers_without_the_feature():
    """A peer that does not advertise TraceContext (a Go router) never gets the extension tag."""
    net = MeshNet()
    a = net.add(1, discovery=False, bus_channels=(CH,))
    b = net.add(2, discovery=False, bus_channels=(CH,), trace_context=False)
    net.connect(a, [b])
    net.run(30)
    net.apply(a, net.routers[a].send_gossip(CH, "broadcast", b"x", net.now, trace=TRACEPARENT))
    net.pump()
    assert [(d.payload, d.trace) for d in net.delivered[b]] == [(b"x", None)]
