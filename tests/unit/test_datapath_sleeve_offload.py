"""Offloaded frames through sleeve overlays (weave-py peers on a line A - B - C, over
the in-memory network of test_sleeve_overlay): the OFFLOAD handshake, one marked
datagram per superframe between peers that take it, plain segments to a peer that
does not and through relays, frag-needed for DF superframes, and a restarted peer's
forwarder getting ConnectionEstablished again."""
from __future__ import annotations

import pytest

from services.datapath.sleeve import frame as fr
from services.datapath.sleeve import offload as ol
from services.datapath.sleeve.forwarder import (CONNECTION_ESTABLISHED, OFFLOAD, OFFLOAD_REPLY, OFFLOAD_RESUMED,
                                                OFFLOAD_TAKES, SendControl, ForwarderState)
from services.datapath.sleeve.overlay import Inject
from tests.unit.test_datapath_offload import tcp_frame, udp_frame, vnet
from tests.unit.test_sleeve_overlay import ADDR, KEY, A, B, C, Net

MAC_A, MAC_C = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


class OffloadNet(Net):
    """Net whose forwarders offer offload (`takers`: the peers that take marked frames)
    and which keeps injected frames with their virtio-net headers."""

    def __init__(self, takers=(A, B, C), key=None) -> None:
        super().__init__(key)
        self.takers = set(takers)
        self.injected_vnet = {p: [] for p in self.overlays}
        self.controls = []

    def connect(self, dialler, listener, uid, resumed=False):
        fa = self.overlays[dialler].make_forwarder(listener, uid, True, ADDR[listener], self.key,
                                                   offload=dialler in self.takers, resumed=resumed)
        fb = self.overlays[listener].make_forwarder(dialler, uid, False, None, self.key,
                                                    offload=listener in self.takers)
        self.fwd[(dialler, listener)], self.fwd[(listener, dialler)] = fa, fb
        self.push(dialler, self.overlays[dialler].confirm(fa, self.now))
        self.push(listener, self.overlays[listener].confirm(fb, self.now))
        self.pump()

    def deliver(self, me, action):
        if isinstance(action, SendControl):
            self.controls.append((me, action.peer, action.tag, action.body))
        if isinstance(action, Inject):
            self.injected_vnet[me].append((bytes(action.frame), action.vnet))
        super().deliver(me, action)

    def capture_gso(self, peer, frame, hdr):
        self.push(peer, self.overlays[peer].capture(frame, self.now, hdr))
        self.pump()


def setup(takers=(A, B, C), key=None) -> OffloadNet:
    net = OffloadNet(takers, key)
    net.connect(A, B, 1111)
    net.connect(B, C, 2222)
    net.advance(1.0)
    # C's MAC learnt behind C, A's behind A (an ARP exchange)
    net.capture(A, b"\xff" * 6 + MAC_A + b"\x08\x06" + bytes(28))
    net.capture(C, MAC_A + MAC_C + b"\x08\x06" + bytes(28))
    return net


def superframe(payload_len=20000):
    frame = MAC_C + MAC_A + tcp_frame(bytes(payload_len))[12:]
    return frame, vnet(ol.F_NEEDS_CSUM, ol.GSO_TCPV4, 54, 1300, 34, 16)


@pytest.mark.parametrize("key", [None, KEY])
def test_handshake_then_one_marked_datagram_per_superframe(key):
    net = setup(key=key)
    offers = [(me, peer, body) for me, peer, tag, body in net.controls if tag == OFFLOAD]
    assert (A, B, bytes([OFFLOAD_TAKES])) in offers and (B, A, bytes([OFFLOAD_TAKES | OFFLOAD_REPLY])) in offers
    assert all(f.peer_offload and f.stack_frag for f in net.fwd.values())
    frame, hdr = superframe()
    before = net.datagrams
    net.capture_gso(B, MAC_A + MAC_C + frame[12:], hdr)  # B -> A, direct: marked
    assert net.datagrams - before == 1
    assert net.injected_vnet[A][-1] == (MAC_A + MAC_C + frame[12:], hdr)


def test_relay_and_plain_peers_get_segments():
    net = setup(takers=(A, B))  # C is Weave Net: never answers OFFLOAD
    assert net.fwd[(B, C)].peer_offload is False and net.fwd[(A, B)].peer_offload is True
    frame, hdr = superframe(1300 * 3)
    net.capture_gso(A, frame, hdr)  # A -> C via B: not the destination, so plain segments
    got = net.injected_vnet[C]
    assert [len(f) for f, v in got[-3:]] == [14 + 20 + 20 + 1300] * 3 and all(v is None for _, v in got[-3:])
    assert b"".join(f[54:] for f, _ in got[-3:]) == frame[54:]


def test_df_superframe_over_the_mtu_gets_frag_needed():
    net = setup()
    frame, _ = superframe(4000)
    hdr = vnet(ol.F_NEEDS_CSUM, ol.GSO_TCPV4, 54, 4000, 34, 16)  # one 4000-byte segment: over 1438
    net.capture_gso(B, MAC_A + MAC_C + frame[12:], hdr)
    icmp = net.injected_vnet[B][-1][0]
    assert icmp[:12] == MAC_C + MAC_A and icmp[23] == 1 and icmp[34:36] == b"\x03\x04"
    assert int.from_bytes(icmp[40:42], "big") == 1438


def test_a_restarted_peer_is_acknowledged_again():
    net = setup()
    old = net.fwd[(A, B)]
    net.overlays[A].stop(old)
    net.controls.clear()
    net.connect(A, B, 1111, resumed=True)  # A's datapath restarted under the same mesh connection
    new = net.fwd[(A, B)]
    assert (A, B, OFFLOAD, bytes([OFFLOAD_TAKES | OFFLOAD_RESUMED])) in net.controls
    assert (B, A, CONNECTION_ESTABLISHED, b"") in net.controls
    assert new.state is ForwarderState.ESTABLISHED and new.peer_offload


def test_a_forwarder_that_did_not_offer_offload_never_unmarks():
    net = setup(takers=(A, B))  # C does not take marked frames
    marked = ol.mark(MAC_C + MAC_A + b"\x08\x00" + bytes(60), ol.ZERO_VNET)
    packer = fr.PlainPacker(B)  # a plain packet as B would build it (no key here)
    packer.append_frame(B, C, marked)
    actions = net.overlays[C].receive(bytes(packer.flush()), ADDR[B], net.now)
    assert [(bytes(a.frame), a.vnet) for a in actions if isinstance(a, Inject)] == [(marked, None)]


def test_a_flooded_offloaded_frame_is_unmarked_after_each_hop():
    net = setup()
    payload = udp_partial()
    hdr = vnet(ol.F_NEEDS_CSUM, 0, 0, 0, 34, 6)
    net.capture_gso(A, b"\x01\x00\x5e\x07\x07\x07" + MAC_A + payload[12:], hdr)  # multicast: flooded A -> B -> C
    for peer in (B, C):
        frame, got = net.injected_vnet[peer][-1]
        assert got == hdr and frame[:6] == b"\x01\x00\x5e\x07\x07\x07" and not ol.is_marked(frame)
    assert net.overlays[B].stats.relayed >= 1


def udp_partial() -> bytes:
    return udp_frame(b"multicast payload")


def test_a_restarted_datapath_facing_weave_net_establishes_on_its_heartbeat():
    net = setup(takers=(B,))  # A is Weave Net: ignores OFFLOAD, acknowledges heartbeats once
    net.overlays[B].stop(net.fwd[(B, A)])
    net.controls.clear()
    fwd = net.overlays[B].make_forwarder(A, 1111, False, None, None, offload=True, resumed=True)
    net.fwd[(B, A)] = fwd
    net.push(B, net.overlays[B].confirm(fwd, net.now))
    net.pump()
    assert fwd.state is ForwarderState.CONFIRMED and fwd.remote_addr is None  # inbound: waits for A's heartbeat
    net.advance(net.now + 10.5)  # A's slow heartbeat arrives
    assert fwd.state is ForwarderState.ESTABLISHED and fwd.remote_addr == ADDR[A]
    assert not any(tag == CONNECTION_ESTABLISHED and me == A for me, _, tag, _ in net.controls)
    net.advance(net.now + 1.0)
    assert fwd.stack_frag and fwd.mtu == 1438  # frag test and PMTU discovery ran


def test_a_superframe_too_big_for_one_datagram_is_resolved_unless_the_peer_takes_trains():
    """A 64 KiB superframe (gso_max_size 65536) marked exceeds one UDP datagram: to a
    peer without segment trains it goes as ordinary segments, never dropped as
    oversized; with trains on both ends it goes whole as one (train) datagram."""
    net = setup()
    frame, hdr = superframe(65_440)  # IP length 65480: the marked datagram would be 65,526 bytes
    big = MAC_A + MAC_C + frame[12:]
    before, injected = net.datagrams, len(net.injected_vnet[A])
    net.capture_gso(B, big, hdr)
    got = net.injected_vnet[A][injected:]
    assert net.datagrams - before > 1 and all(v is None for _, v in got)
    assert b"".join(f[54:] for f, _ in got) == big[54:]
    assert not any(f.oversized for f in net.fwd.values())
    for f in net.fwd.values():
        f.trains = f.peer_trains = True
        assert f.train_seg and f.nondf_limit > 65_507
    before = net.datagrams
    net.capture_gso(B, big, hdr)
    assert net.datagrams - before == 1 and net.injected_vnet[A][-1] == (big, hdr)
