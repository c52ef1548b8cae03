"""The overlay switch (sans-I/O, manual clock): preference order, fallback when fastpath
heartbeats stop, recovery when they resume, the modes and the password rule, what the
kernel (FDB entries, flushes, sources, pruning) and gossip (reports, failures) are
told; and the fastpath heartbeat frame codec."""
from __future__ import annotations

import asyncio
import os
import socket
import struct
import time

import pytest

from services.datapath import fastpath as fp
from services.datapath.fastpath_shell import FastpathShell
from shared.weave.peer_name import PeerName
from services.datapath.overlay_switch import (BUSY_FRAMES, FASTPATH, HEARTBEAT_S, IDLE_HEARTBEAT_S, SLEEVE, TIMEOUT_S, ZERO_MAC,
                                              AllowSource, Fail,
                                              FlushLearnt, OverlaySwitch, Prune, Report, SendHeartbeat, SetFdb,
                                              SleeveStatus, Switched, fastpath_allowed)

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


def test_falls_back_before_a_tcp_streams_third_retransmission():
    """A TCP sender whose segments vanish resends after its RTO, doubled each time (0.2 s
    at least: 0.2, 0.6 and 1.4 s after the loss began, then 3.0 s). The fallback (and
    the FDB flush, and the sleeve learning the MACs flushed) must come before the third
    even when the last heartbeat arrived just before the loss: else the stream waits for
    the fourth, ~3 s after the loss (two empty seconds in the e2e fallback test)."""
    sw, _ = up()
    sw.heartbeat(PEER, UID, True, 1.0)  # the path breaks right after this one
    third = 1.0 + 0.2 + 0.4 + 0.8
    assert switches(sw.tick(1.0 + 3 * HEARTBEAT_S + 0.05)) == [], "three lost heartbeats are tolerated"
    assert switches(sw.tick(third - 0.3)) == [(SLEEVE, FASTPATH)]


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
    assert sw.remove(UID) == [SetFdb(str(PEER), "10.0.0.2", False), AllowSource("10.0.0.2", False)]
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
    from services.datapath.sleeve_mesh import SleeveNextHops
    from services.datapath.topology import TopologyRoutes
    from shared.schemas.mesh import TopologyEvent

    names = ["aa:00:00:00:00:01", "aa:00:00:00:00:02", "aa:00:00:00:00:03"]
    routes = TopologyRoutes()
    peers = [{"name": n, "nickname": f"h{i + 1}", "uid": i + 1, "short_id": i + 1, "reachable": True}
             for i, n in enumerate(names)]
    routes.update(TopologyEvent.model_validate({
        "ourself": names[0], "peers": peers, "unicast": {names[1]: names[1], names[2]: names[2]},
        "broadcast": {names[0]: [names[1], names[2]], names[1]: [names[2]]}, "removed": []}))
    sw = OverlaySwitch("fastpath")
    sr = SleeveNextHops(routes, lambda: sw.fast_peers)
    a, b, c = (int(n.replace(":", ""), 16) for n in names)
    assert sr.broadcast(a) == [b, c]
    sw.add(PeerName(b), UID, "10.0.0.2", BOTH, None, 0.0)  # the fastpath carries b at once in this mode
    assert sw.fast_peers == {b}
    assert sr.broadcast(a) == [c]  # the VXLAN device floods to b
    assert sr.broadcast(b) == [c]  # relaying someone else's broadcast is unchanged
    assert sr.unicast(b) == b
    sw.remove(UID)
    assert sr.broadcast(a) == [b, c]


# -- what the kernel and gossip are told (the table in overlay_switch.py) ----------------------
IP = "10.0.0.2"


def sleeve_up(mtu=1438, established=True, overlay="fast-sleeve"):
    return SleeveStatus(overlay, mtu, False, established)


def test_an_allowed_path_gets_its_fdb_entry_and_source_before_anything_else():
    sw, out = up()
    assert out[:2] == [SetFdb("aa:00:00:00:00:02", IP, True), AllowSource(IP, True)]
    assert out[2] == Switched(PEER, UID, SLEEVE, None)
    _, out = up(key=b"k" * 32)  # encrypted: never the fastpath, nothing in the kernel
    assert [a for a in out if isinstance(a, (SetFdb, AllowSource))] == []


def test_on_the_fastpath_floods_go_to_the_peer_and_gossip_hears_of_it():
    sw = OverlaySwitch("auto", fast_mtu=1450)
    sw.add(PEER, UID, IP, BOTH, None, 0.0)
    out = sw.heartbeat(PEER, UID, True, 0.3)
    assert out[:3] == [Switched(PEER, UID, FASTPATH, SLEEVE), SetFdb(ZERO_MAC, IP, True),
                       Report(PEER, UID, FASTPATH, 1450, False)]
    assert sw.fast_peers == {PEER} and sw.fastpath_peers() == {PEER}


@pytest.mark.parametrize("word, told", [
    (None, []),  # the sleeve never said anything: it reports when it is established
    (sleeve_up(), [Report(PEER, UID, "fast-sleeve", 1438, False)]),
    (sleeve_up(established=False), []),  # resumed, heartbeats not acknowledged yet
    (SleeveStatus("sleeve", 0, False, False, failed="no heartbeat"), [Fail(PEER, UID, "no heartbeat")]),
])
def test_after_a_fallback_gossip_hears_the_sleeves_last_word(word, told):
    sw = OverlaySwitch("auto")
    sw.add(PEER, UID, IP, BOTH, None, 0.0)
    sw.heartbeat(PEER, UID, True, 1.0)
    if word is not None:
        assert sw.sleeve(UID, word) == [], "the fastpath carries the peer: gossip is told nothing"
    out = sw.tick(1.0 + TIMEOUT_S)
    assert out[:3] == [Switched(PEER, UID, SLEEVE, FASTPATH), SetFdb(ZERO_MAC, IP, False), FlushLearnt(IP, PEER)]
    assert [a for a in out if isinstance(a, (Report, Fail))] == told
    assert sw.fast_peers == frozenset()


def test_on_sleeve_every_word_of_the_sleeve_is_told():
    sw, _ = up("sleeve")
    assert sw.sleeve(UID, sleeve_up(mtu=0, overlay="sleeve")) == [Report(PEER, UID, "sleeve", 0, False)]
    assert sw.sleeve(UID, sleeve_up(established=False)) == [Report(PEER, UID, "fast-sleeve", 1438, False)]
    assert sw.sleeve(UID, SleeveStatus("sleeve", 0, True, False, failed="x")) == [Fail(PEER, UID, "x")]
    assert sw.sleeve(UID + 1, sleeve_up()) == [], "not a connection the switch knows"


def test_removing_a_path_on_the_fastpath_undoes_its_kernel_state():
    sw = OverlaySwitch("fastpath")
    sw.add(PEER, UID, IP, BOTH, None, 0.0)
    sw.add(PEER, UID + 1, IP, BOTH, None, 0.0)  # a second connection to the same address
    mac = str(PEER)
    assert sw.remove(UID) == [SetFdb(mac, IP, False), SetFdb(ZERO_MAC, IP, False), FlushLearnt(IP, PEER)]
    assert sw.remove(UID + 1) == [SetFdb(mac, IP, False), AllowSource(IP, False), SetFdb(ZERO_MAC, IP, False),
                                  FlushLearnt(IP, PEER)]
    assert sw.remove(UID) == []
    assert sw.fast_peers == frozenset()


def test_what_a_previous_process_left_is_pruned_to_what_the_paths_need():
    p3, p4 = PeerName.parse("aa:00:00:00:00:03"), PeerName.parse("aa:00:00:00:00:04")
    sw = OverlaySwitch("auto")
    sw.add(PEER, UID, IP, BOTH, None, 0.0)
    sw.add(p3, 78, "10.0.0.3", BOTH, None, 0.0)
    sw.add(p4, 79, "10.0.0.4", (SLEEVE,), None, 0.0)  # a Go peer: not in the kernel
    sw.heartbeat(p3, 78, True, 0.1)
    assert sw.prune_previous() == [Prune(frozenset({IP, "10.0.0.3"}), frozenset({"10.0.0.3"}))]
    assert OverlaySwitch("sleeve").prune_previous() == []


def on_fastpath():
    sw, _ = up()
    sw.heartbeat(PEER, UID, True, 0.1)
    assert sw.using(UID) == FASTPATH
    return sw


def test_without_traffic_heartbeats_slow_down_and_say_so():
    sw = on_fastpath()
    assert sw.traffic(0, 0.2) == []
    hb = heartbeats(sw.tick(0.1 + HEARTBEAT_S))  # the one due at the quick pace announces the slow one
    assert hb == [SendHeartbeat(PEER, UID, True, idle=True)]
    sw.heartbeat(PEER, UID, True, 0.9, idle=True)  # the peer is idle too
    assert heartbeats(sw.tick(0.1 + HEARTBEAT_S + IDLE_HEARTBEAT_S - 0.01)) == []
    assert heartbeats(sw.tick(0.1 + HEARTBEAT_S + IDLE_HEARTBEAT_S)) == [SendHeartbeat(PEER, UID, True, idle=True)]
    assert sw.using(UID) == FASTPATH


def test_traffic_starting_sends_a_heartbeat_at_once_at_the_quick_pace():
    sw = on_fastpath()
    sw.traffic(0, 0.2)
    sw.tick(0.1 + HEARTBEAT_S)
    out = sw.traffic(100, 0.5)
    assert heartbeats(out) == [SendHeartbeat(PEER, UID, True, idle=False)]
    assert sw.traffic(100, 0.6) == []  # still busy: nothing new
    assert heartbeats(sw.tick(0.5 + HEARTBEAT_S)) == [SendHeartbeat(PEER, UID, True)]


def test_a_peer_that_announced_the_slow_pace_is_given_four_of_its_intervals():
    sw, _ = up()
    sw.heartbeat(PEER, UID, True, 1.0, idle=True)
    assert sw.using(UID) == FASTPATH
    assert sw.next_deadline() <= 1.0 + HEARTBEAT_S  # our own heartbeat (we are busy until told)
    assert switches(sw.tick(1.0 + TIMEOUT_S + 0.5)) == []  # the quick pace's timeout is not the peer's
    assert switches(sw.tick(1.0 + 4 * IDLE_HEARTBEAT_S - 0.01)) == []
    assert switches(sw.tick(1.0 + 4 * IDLE_HEARTBEAT_S)) == [(SLEEVE, FASTPATH)]
    # a quick heartbeat again: the short timeout is back
    sw.heartbeat(PEER, UID, True, 10.0)
    assert switches(sw.tick(10.0 + TIMEOUT_S)) == [(SLEEVE, FASTPATH)]


def test_heartbeat_frame_carries_the_pace():
    h1, h2 = PeerName.parse("aa:00:00:00:00:01"), PeerName.parse("aa:00:00:00:00:02")
    assert fp.decode_heartbeat(fp.encode_heartbeat(h1, h2, 5, False, idle=True)) == fp.Heartbeat(h1, h2, 5, False, True)
    assert fp.decode_heartbeat(fp.encode_heartbeat(h1, h2, 5, True)).idle is False


def test_device_packets_from_proc_net_dev():
    text = ("Inter-|   Receive                                                |  Transmit\n"
            " face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls"
            " carrier compressed\n"
            "    lo:    1000      10    0    0    0     0          0         0     1000      10    0    0    0     0"
            "       0          0\n"
            f"{fp.DEVICE}: 90000     123    0    0    0     0          0         0    80000     456    0    0    0"
            "     0       0          0\n")
    assert fp.device_packets(text) == 123 + 456
    assert fp.device_packets(text, "weave") is None


def test_a_few_stray_frames_are_not_traffic():
    sw = on_fastpath()
    sw.traffic(0, 0.2)
    assert sw.traffic(BUSY_FRAMES - 1, 0.3) == [] and not sw.busy  # an ARP now and then
    assert heartbeats(sw.traffic(BUSY_FRAMES, 0.4)) and sw.busy


def peers(n):
    return [(PeerName.parse(f"aa:00:00:00:01:{k:02x}"), 100 + k) for k in range(n)]


def test_the_paths_heartbeats_fall_into_one_beat():
    """Paths added at scattered times share one beat after their first rounds: a host with
    many peers wakes once an interval for its heartbeats, not once per peer. Batching only
    ever sends a heartbeat early, never late."""
    sw = OverlaySwitch("auto")
    sw.traffic(0, 0.0)  # at rest: IDLE_HEARTBEAT_S
    last_sent: dict[int, float] = {}
    beats: set[float] = set()

    def sent(actions, now):
        for a in heartbeats(actions):
            assert now - last_sent.get(a.conn_uid, now) <= IDLE_HEARTBEAT_S + 1e-9, "never later than the interval"
            last_sent[a.conn_uid] = now
            beats.add(round(now, 6))

    for k, (peer, uid) in enumerate(peers(6)):
        sent(sw.add(peer, uid, f"10.0.0.{k + 2}", BOTH, None, 0.17 * k), 0.17 * k)
    # each peer's own heartbeats come at its own phase, once a second
    arrivals = sorted((0.17 * k + 0.05 + j, peer, uid) for k, (peer, uid) in enumerate(peers(6)) for j in range(7))
    now = 0.17 * 5
    while now < 6.0:
        now = min(sw.next_deadline(), arrivals[0][0])
        while arrivals[0][0] <= now:
            _, peer, uid = arrivals.pop(0)
            sent(sw.heartbeat(peer, uid, True, now, idle=True), now)
        sent(sw.tick(now), now)
        assert sw.fastpath_peers() == {peer for peer, _ in peers(6)} or now < 1.0
    late = sorted(t for t in beats if t >= 3.0)
    gaps = {round(b - a, 6) for a, b in zip(late, late[1:])}
    assert len(late) >= 3 and gaps == {IDLE_HEARTBEAT_S}, sorted(beats)  # one beat a second, every path in it
    assert {round(t, 6) for t in last_sent.values()} == {late[-1]}


def test_settled_once_every_path_works_both_ways_and_not_after_a_fallback():
    sw, _ = up()
    assert not sw.settled(0.0)  # nothing heard yet: the shell reads each heartbeat at once
    sw.heartbeat(PEER, UID, False, 0.1)
    assert not sw.settled(0.1)  # the peer does not hear us yet
    sw.heartbeat(PEER, UID, True, 0.2)
    assert sw.settled(0.2)
    other = PeerName.parse("aa:00:00:00:00:03")
    sw.add(other, UID + 1, "10.0.0.3", BOTH, None, 0.3)
    assert not sw.settled(0.3)  # a new path is proven with eager reads
    sw.heartbeat(other, UID + 1, True, 0.4)
    assert sw.settled(0.4)
    sw.tick(0.4 + TIMEOUT_S)  # both peers went quiet: fallback
    assert not sw.settled(0.4 + TIMEOUT_S)
    # a sleeve-only path (a Go peer) never holds it back
    go = PeerName.parse("aa:00:00:00:00:04")
    sw2, _ = up()
    sw2.add(go, UID + 2, "10.0.0.4", (SLEEVE,), None, 0.0)
    sw2.heartbeat(PEER, UID, True, 0.1)
    assert sw2.settled(0.1)


def test_received_at_reads_the_kernels_timestamp():
    stamp = (socket.SOL_SOCKET, fp.SO_TIMESTAMPNS, struct.pack("@qq", 1_700_000_000, 250_000_000))
    assert fp.received_at([stamp]) == 1_700_000_000.25
    before = time.time()
    assert before <= fp.received_at([]) <= time.time()  # no timestamp: now


def test_proc_net_dev_is_read_afresh_from_one_descriptor():
    """The shell keeps /proc/net/dev open and reads it from offset 0 every beat: each
    read sees the counters of that moment (loopback's, moved by a datagram to itself)."""
    shell = FastpathShell(PEER, "127.0.0.1", "weave", "vethwe-bridge")
    before = fp.device_packets(shell._net_dev(), "lo")
    fd = shell._net_dev_fd
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        for _ in range(5):
            s.sendto(b"x", s.getsockname())
    after = fp.device_packets(shell._net_dev(), "lo")
    assert shell._net_dev_fd == fd and after >= before + 10  # 5 sent + 5 received


def test_drained_heartbeats_keep_their_arrival_within_the_beat_whatever_the_wall_clock():
    """A heartbeat's kernel time (wall clock) becomes the loop's time of its arrival, and
    never earlier than the previous drain (which would have read it) nor later than now:
    a wall clock stepped forward or back cannot make a peer look silent."""
    hb = fp.Heartbeat(PEER, PEER, UID, True)

    class Waiting:
        def __init__(self):
            self.frames = []

        def recv_all(self):
            got, self.frames = self.frames, []
            return got

    async def run():
        shell = FastpathShell(PEER, "127.0.0.1", "weave", "vethwe-bridge")
        shell.hb = Waiting()
        loop = asyncio.get_running_loop()
        first = loop.time()
        assert shell.drain() == []
        await asyncio.sleep(0.2)
        wall = time.time()
        shell.hb.frames = [(hb, wall - 0.1), (hb, wall - 3600.0), (hb, wall + 3600.0)]
        (_, a), (_, b), (_, c) = shell.drain()
        now = loop.time()
        assert now - 0.15 < a < now - 0.05  # 0.1 s ago
        assert first <= b < first + 0.05  # "an hour ago": no earlier than the last drain
        assert now - 0.05 < c <= now  # "in an hour": now
    asyncio.run(run())


def test_a_broken_proc_net_dev_descriptor_is_opened_afresh():
    shell = FastpathShell(PEER, "127.0.0.1", "weave", "vethwe-bridge")
    shell.index = 1  # as if the device were up
    shell._net_dev()
    os.close(shell._net_dev_fd)  # e.g. closed under it
    assert shell.frames() is None and shell._net_dev_fd is None
    assert fp.device_packets(shell._net_dev(), "lo") is not None
