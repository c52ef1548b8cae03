"""The overlay switch (sans-I/O, manual clock): preference order, fallback when fastpath
heartbeats stop, recovery when they resume, the modes and the password rule; and the
fastpath heartbeat frame codec."""
from __future__ import annotations

import pytest

from services.datapath import fastpath as fp
from shared.weave.peer_name import PeerName
from services.datapath.overlay_switch import (FASTPATH, HEARTBEAT_S, SLEEVE, TIMEOUT_S, OverlaySwitch, SendHeartbeat,
                                              Switched, fastpath_allowed)

PEER = PeerName.parse("aa:00:00:00:00:02")
UID = 77
BOTH = (FASTPATH, SLEEVE)


def switches(actions):
    return [(a.overlay, a.previous) for a in actions if isinstance(a, Switched)]


def heartbeats(actions):
    return [a for a in actions if isinstance(a, SendHeartbeat)]


def up(mode="auto", overlays=BOTH, key=None, now=0.0):
    sw = OverlaySwitch(mode)
    out = sw.add(PEER, UID, "10.0.0.2", overlays, key, now)
    return sw, out


@pytest.mark.parametrize("mode, overlays, key, allowed", [
    ("auto", BOTH, None, True),
    ("fastpath", BOTH, None, True),
    ("sleeve", BOTH, None, False),
    ("auto", (SLEEVE,), None, False),  # a Go peer: it never advertises our overlay
    ("auto", ("fastdp", SLEEVE), None, False),  # Weave's fastdp is not ours
    ("auto", BOTH, b"k" * 32, False),  # password, untrusted connection: encryption needed
    ("fastpath", BOTH, b"k" * 32, False),
])
def test_fastpath_allowed_table(mode, overlays, key, allowed):
    assert fastpath_allowed(mode, overlays, key) is allowed
    sw, out = up(mode, overlays, key)
    assert sw.paths[UID].allowed is allowed
    if not allowed:  # sleeve at once, and no heartbeats
        assert switches(out) == [(SLEEVE, None)] and not heartbeats(out)
        assert sw.next_deadline() is None
        assert sw.heartbeat(PEER, UID, True, 0.1) == []
        assert sw.using(UID) == SLEEVE


def test_auto_starts_on_sleeve_and_moves_to_fastpath_once_both_directions_work():
    sw, out = up()
    assert switches(out) == [(SLEEVE, None)]
    assert heartbeats(out) == [SendHeartbeat(PEER, UID, False)]
    # the peer hears nothing from us yet: one direction only, stay on sleeve, answer at once
    out = sw.heartbeat(PEER, UID, False, 0.2)
    assert switches(out) == [] and heartbeats(out) == [SendHeartbeat(PEER, UID, True)]
    assert sw.using(UID) == SLEEVE
    out = sw.heartbeat(PEER, UID, True, 0.3)
    assert switches(out) == [(FASTPATH, SLEEVE)]
    assert sw.fastpath_peers() == {PEER} and sw.works(UID, 0.3)


def test_heartbeats_are_periodic():
    sw, _ = up()
    assert heartbeats(sw.tick(HEARTBEAT_S / 2)) == []
    assert heartbeats(sw.tick(HEARTBEAT_S)) == [SendHeartbeat(PEER, UID, False)]
    sw.heartbeat(PEER, UID, True, HEARTBEAT_S + 0.1)
    hb = heartbeats(sw.tick(2 * HEARTBEAT_S + 0.2))
    assert hb == [SendHeartbeat(PEER, UID, True)]
    assert sw.next_deadline() is not None


def test_fallback_when_heartbeats_stop_and_return_when_they_resume():
    sw, _ = up()
    sw.heartbeat(PEER, UID, True, 1.0)
    assert sw.using(UID) == FASTPATH
    assert switches(sw.tick(1.0 + TIMEOUT_S - 0.01)) == []
    assert sw.next_deadline() <= 1.0 + TIMEOUT_S
    assert switches(sw.tick(1.0 + TIMEOUT_S)) == [(SLEEVE, FASTPATH)]
    assert sw.using(UID) == SLEEVE and sw.fastpath_peers() == set()
    # still heartbeating while on sleeve, telling the peer we no longer hear it
    assert heartbeats(sw.tick(10.0)) == [SendHeartbeat(PEER, UID, False)]
    assert switches(sw.heartbeat(PEER, UID, True, 10.1)) == [(FASTPATH, SLEEVE)]


def test_falls_back_when_the_peer_stops_hearing_us():
    sw, _ = up()
    sw.heartbeat(PEER, UID, True, 1.0)
    # our heartbeats are lost one way: the peer says so, we leave the fastpath at once
    assert switches(sw.heartbeat(PEER, UID, False, 1.5)) == [(SLEEVE, FASTPATH)]


def test_fastpath_mode_never_falls_back_for_allowed_peers():
    sw, out = up("fastpath")
    assert switches(out) == [(FASTPATH, None)]
    assert switches(sw.tick(100.0)) == []
    assert sw.using(UID) == FASTPATH
    assert heartbeats(sw.tick(100.0 + HEARTBEAT_S))


def test_heartbeats_of_another_connection_or_peer_are_ignored():
    sw, _ = up()
    assert sw.heartbeat(PEER, UID + 1, True, 0.1) == []
    assert sw.heartbeat(PeerName.parse("aa:00:00:00:00:09"), UID, True, 0.1) == []
    assert sw.using(UID) == SLEEVE


def test_remove_and_duplicate_add():
    sw, _ = up()
    assert sw.add(PEER, UID, "10.0.0.2", BOTH, None, 1.0) == []
    assert sw.remove(UID).peer == PEER
    assert sw.using(UID) is None and sw.tick(5.0) == []
    with pytest.raises(ValueError):
        OverlaySwitch("fastdp")


def test_heartbeat_frame_round_trip_and_rejects():
    h1, h2 = PeerName.parse("aa:00:00:00:00:01"), PeerName.parse("aa:00:00:00:00:02")
    frame = fp.encode_heartbeat(h1, h2, 2**63 + 5, True)
    assert len(frame) == fp.HB_LEN
    assert frame[:12] == bytes.fromhex("aa0000000002" "aa0000000001")  # to h2's bridge MAC, from h1's
    hb = fp.decode_heartbeat(frame)
    assert hb == fp.Heartbeat(h1, h2, 2**63 + 5, True) and type(hb.src) is PeerName
    assert fp.decode_heartbeat(frame[:20]) is None
    assert fp.decode_heartbeat(frame[:12] + b"\x08\x00" + frame[14:]) is None  # IPv4, not ours
    assert fp.decode_heartbeat(frame[:14] + b"XXXX" + frame[18:]) is None
    assert fp.fastpath_mtu(1500) == 1450 and fp.ip_of("10.0.0.2:6783") == "10.0.0.2"
    assert fp.device_mtu(65535) == 65485 and fp.device_mtu(1376) == 1376


def test_sleeve_leaves_fastpath_peers_out_of_our_own_broadcasts_only():
    from services.datapath.overlay_shell import _SleeveNextHops
    from services.datapath.topology import TopologyRoutes
    from shared.schemas.mesh import TopologyEvent

    names = ["aa:00:00:00:00:01", "aa:00:00:00:00:02", "aa:00:00:00:00:03"]
    routes = TopologyRoutes()
    peers = [{"name": n, "nickname": f"h{i + 1}", "uid": i + 1, "short_id": i + 1, "reachable": True}
             for i, n in enumerate(names)]
    routes.update(TopologyEvent.model_validate({
        "ourself": names[0], "peers": peers, "unicast": {names[1]: names[1], names[2]: names[2]},
        "broadcast": {names[0]: [names[1], names[2]], names[1]: [names[2]]}, "removed": []}))
    fast: set[int] = set()
    sr = _SleeveNextHops(routes, fast)
    a, b, c = (int(n.replace(":", ""), 16) for n in names)
    assert sr.broadcast(a) == [b, c]
    fast.add(b)
    assert sr.broadcast(a) == [c]  # the VXLAN device floods to b
    assert sr.broadcast(b) == [c]  # relaying someone else's broadcast is unchanged
    assert sr.unicast(b) == b
