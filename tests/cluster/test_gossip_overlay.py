"""The router's side of the overlay (the datapath's sleeve): connections wait for the
overlay, it gets the right session key, its control messages cross the mesh, and its
verdicts establish or drop the connection."""
from __future__ import annotations

from services.gossip.connection import ConnState
from services.gossip.router import OverlayDown, OverlayMessage, OverlayUp
from services.gossip.status import connections_text
from tests.cluster.meshnet import MeshNet


def pair(pw=None, overlays_a=("sleeve",), overlays_b=("sleeve",), trusted=((), ())):
    net = MeshNet()
    a = net.add(1, password=pw, overlays=overlays_a, trusted_subnets=trusted[0])
    b = net.add(2, password=pw, overlays=overlays_b, trusted_subnets=trusted[1])
    net.connect(a, [b])
    net.run(5)
    return net, a, b


def ups(net, ip):
    return [e.conn for e in net.overlay_events.get(ip, []) if isinstance(e, OverlayUp)]


def test_connection_waits_for_the_overlay_then_establishes():
    net, a, b = pair()
    ra, rb = net.routers[a], net.routers[b]
    assert [c.state for c in ra.conns.values()] == [ConnState.PENDING]
    (ca,), (cb,) = ups(net, a), ups(net, b)
    assert ca.conn_uid == cb.conn_uid and ca.outbound and not cb.outbound
    assert ca.overlays == ("sleeve",) and ca.compat is False and ca.session_key is None
    net.apply(a, ra.overlay_established(rb.config.name, net.now, "sleeve", {"mtu": 1438, "encrypted": False},
                                        conn_uid=ca.conn_uid))
    assert [c.state for c in ra.conns.values()] == [ConnState.ESTABLISHED]
    assert "sleeve" in connections_text(ra) and "mtu=1438" in connections_text(ra)


def test_session_key_only_for_untrusted_encrypted_connections():
    net, a, b = pair(pw=b"pw")
    (ca,), (cb,) = ups(net, a), ups(net, b)
    assert ca.session_key is not None and ca.session_key == cb.session_key and len(ca.session_key) == 32
    net, a, b = pair(pw=b"pw", trusted=(("10.0.0.0/24",), ("10.0.0.0/24",)))
    (ca,) = ups(net, a)
    assert ca.session_key is None, "both ends trust each other: plaintext overlay"
    net, a, b = pair(pw=b"pw", trusted=(("10.0.0.0/24",), ()))
    (ca,) = ups(net, a)
    assert ca.session_key is not None, "trust must be mutual"


def test_control_messages_cross_the_mesh():
    net, a, b = pair(pw=b"pw")
    ra, rb = net.routers[a], net.routers[b]
    (ca,) = ups(net, a)
    net.apply(a, ra.send_overlay(rb.config.name, ca.conn_uid, 7, b"\x00\x01", net.now))
    net.pump()
    msgs = [e for e in net.overlay_events[b] if isinstance(e, OverlayMessage)]
    assert [(m.peer, m.conn_uid, m.tag, m.payload) for m in msgs] == [(ra.config.name, ca.conn_uid, 7, b"\x00\x01")]
    # a stale conn_uid is ignored
    net.apply(a, ra.send_overlay(rb.config.name, ca.conn_uid ^ 1, 7, b"\x00\x02", net.now))
    net.pump()
    assert len([e for e in net.overlay_events[b] if isinstance(e, OverlayMessage)]) == 1


def test_overlay_failure_drops_the_connection():
    net, a, b = pair()
    ra, rb = net.routers[a], net.routers[b]
    (ca,) = ups(net, a)
    net.apply(a, ra.overlay_failed(rb.config.name, ca.conn_uid, "no heartbeat for 60 s", net.now))
    net.pump()
    assert ra.conns == {} or all(c.conn_uid != ca.conn_uid for c in ra.conns.values())
    assert any(isinstance(e, OverlayDown) and e.conn.conn_uid == ca.conn_uid for e in net.overlay_events[a])


def test_no_common_overlay_is_refused():
    net, a, b = pair(overlays_a=("sleeve",), overlays_b=("fastdp",))
    assert not any(c.state is ConnState.ESTABLISHED for c in net.routers[a].conns.values())
    assert ups(net, a) == []


def test_peer_without_overlays_feature_gets_compat_sleeve():
    net, a, b = pair(overlays_a=("sleeve",), overlays_b=())
    (ca,) = ups(net, a)
    assert ca.compat is True and ca.overlays == ("sleeve",)


def test_connection_lines_in_weaves_format():
    """As samples/status-subpages-h1*.txt: the overlay's encryption is named only when on."""
    for encrypted, expected in ((False, "-> 10.0.0.2:6783         established sleeve aa:00:00:00:00:02(p2) mtu=1438"),
                                (True, "-> 10.0.0.2:6783         established encrypted   sleeve aa:00:00:00:00:02(p2) "
                                       "encrypted=truemtu=1414")):
        net, a, b = pair(pw=b"pw" if encrypted else None)
        ra, rb = net.routers[a], net.routers[b]
        (ca,) = ups(net, a)
        net.apply(a, ra.overlay_established(rb.config.name, net.now, "sleeve",
                                            {"mtu": 1414 if encrypted else 1438, "encrypted": encrypted},
                                            conn_uid=ca.conn_uid))
        assert connections_text(ra).splitlines() == [expected]


def test_the_topology_view_says_who_is_reachable_and_by_which_connection():
    """What the shell publishes as TopologyEvent: reachable only once the overlay
    established the connection both ways; the address of the direct connection."""
    net, a, b = pair()
    ra, rb = net.routers[a], net.routers[b]
    (ca,) = ups(net, a)
    view = ra.topology_view()
    assert view.ourself == ra.config.name and ra.established_count() == 0
    assert [(p.name, p.reachable, p.address) for p in view.peers] == [
        (ra.config.name, True, ""), (rb.config.name, False, b)]
    assert view.unicast == {}
    for ip, r, other in ((a, ra, rb), (b, rb, ra)):
        net.apply(ip, r.overlay_established(other.config.name, net.now, "sleeve", {}, conn_uid=ca.conn_uid))
    net.run(5)
    view = ra.topology_view()
    assert ra.established_count() == 1
    assert [(p.name, p.uid, p.nickname, p.reachable) for p in view.peers] == [
        (ra.config.name, ra.config.uid, "p1", True), (rb.config.name, rb.config.uid, "p2", True)]
    assert view.unicast == {rb.config.name: rb.config.name}
    assert view.broadcast == {ra.config.name: (rb.config.name,), rb.config.name: ()}
