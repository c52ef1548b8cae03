"""Garbage from a peer closes that one connection and nothing else: random bytes at any
point of a connection's life never raise out of the router core, never hang it, and
never disturb its other connections."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from services.gossip.connection import ConnState
from services.gossip.router import Close
from tests.cluster.meshnet import MeshNet


def meshed_pair():
    net = MeshNet()
    a, b, c = net.add(1), net.add(2), net.add(3)
    net.connect(a, [b, c])
    net.run(5)
    return net, a


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_random_bytes_on_a_fresh_connection(data, whole_header):
    net, a = meshed_pair()
    r = net.routers[a]
    key, _ = r.open_connection(False, "10.9.9.9:1234", net.now)
    prefix = b"weave\x01\x02\x00" if whole_header else b""
    actions = r.receive(key, prefix + data, net.now)
    actions += r.tick(net.now + 11)  # past the header deadline
    established = [c for c in r.conns.values() if c.state is ConnState.ESTABLISHED]
    assert len(established) == 2, "the other connections are untouched"
    if key in r.conns:
        assert r.conns[key].state is ConnState.HANDSHAKING
    else:
        assert any(isinstance(x, Close) and x.key == key for x in actions)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 255), st.binary(max_size=200)), max_size=5))
def test_random_messages_after_the_handshake(messages):
    """Framed messages with any tag and body on an established connection."""
    net, a = meshed_pair()
    r = net.routers[a]
    key = next(k for k, c in r.conns.items() if c.state is ConnState.ESTABLISHED)
    (other_ip, other_key) = net.links[(a, key)]
    sender = net.routers[other_ip].conns[other_key].protocol
    for tag, body in messages:
        net.queue.append((a, key, sender.send_message(tag, body)))
    net.pump()
    net.run(1)
    assert len(r.peers) >= 1 and r.ourself.name in r.peers.names()
    alive = [c for c in r.conns.values() if c.state is ConnState.ESTABLISHED]
    assert len(alive) >= 1, "at most the garbled connection was dropped"
