"""Three sleeve overlays on a line A - B - C, over an in-memory UDP/TCP "network"."""
from __future__ import annotations

from collections import deque

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.datapath.sleeve import frame as fr
from services.datapath.sleeve.crypto import NaClPacker
from services.datapath.sleeve.forwarder import (
    Established,
    Failed,
    MTUVerified,
    SendControl,
    SendPacket,
    ForwarderState,
)
from services.datapath.sleeve.overlay import Inject, SleeveOverlay
from tests.unit.test_sleeve_frame_router import ARP, MAC_A, MAC_C, LineRoutes, ipv4_frame

A, B, C = 0xAA0000000001, 0xAA0000000002, 0xAA0000000003
PEERS = {A, B, C}
ADDR = {A: ("192.168.77.1", 6783), B: ("192.168.77.2", 6783), C: ("192.168.77.3", 6783)}
BY_ADDR = {v: k for k, v in ADDR.items()}
KEY = bytes(range(32))


class Net:
    """Delivers every action instantly; DF datagrams over a link's PMTU bounce with
    EMSGSIZE back to their forwarder, as the kernel does."""

    def __init__(self, key: bytes | None = None, pmtu: dict | None = None) -> None:
        self.key = key
        self.pmtu = pmtu or {}
        self.overlays = {p: SleeveOverlay(p, PEERS, LineRoutes(p)) for p in PEERS}
        self.fwd = {}
        self.injected = {p: [] for p in PEERS}
        self.events = []
        self.datagrams = 0
        self.now = 0.0
        self.queue = deque()
        self.link_up = True

    def connect(self, dialler: int, listener: int, uid: int) -> None:
        fa = self.overlays[dialler].make_forwarder(listener, uid, True, ADDR[listener], self.key)
        fb = self.overlays[listener].make_forwarder(dialler, uid, False, None, self.key)
        self.fwd[(dialler, listener)], self.fwd[(listener, dialler)] = fa, fb
        self.push(dialler, self.overlays[dialler].confirm(fa, self.now))
        self.push(listener, self.overlays[listener].confirm(fb, self.now))
        self.pump()

    def push(self, me: int, actions) -> None:
        self.queue.extend((me, a) for a in actions)

    def pump(self) -> None:
        while True:
            while self.queue:
                self.deliver(*self.queue.popleft())
            flushed = [(p, o.flush()) for p, o in self.overlays.items()]
            if not any(acts for _, acts in flushed):
                return
            for p, acts in flushed:
                self.push(p, acts)

    def deliver(self, me: int, action) -> None:
        if isinstance(action, SendPacket):
            dst = BY_ADDR[action.addr]
            pmtu = self.pmtu.get(frozenset((me, dst)), 1500)
            if action.df and len(action.payload) + fr.UDP_OVERHEAD > pmtu:
                self.push(me, self.fwd[(me, dst)].msg_too_big(pmtu, self.now))
            elif self.link_up:
                self.datagrams += 1
                self.push(dst, self.overlays[dst].receive(action.payload, ADDR[me], self.now))
        elif isinstance(action, SendControl):
            self.push(action.peer, self.fwd[(action.peer, me)].control_message(action.tag, action.body, self.now))
        elif isinstance(action, Inject):
            self.injected[me].append(bytes(action.frame))
        else:
            self.events.append((me, action))

    def advance(self, until: float) -> None:
        while True:
            deadlines = [t for o in self.overlays.values() if (t := o.next_deadline()) is not None]
            if not deadlines or min(deadlines) > until:
                self.now = until
                return
            self.now = min(deadlines)
            for p, o in self.overlays.items():
                self.push(p, o.tick(self.now))
            self.pump()

    def capture(self, peer: int, frame: bytes) -> None:
        self.push(peer, self.overlays[peer].capture(frame, self.now))
        self.pump()


def line(key=None, pmtu=None) -> Net:
    net = Net(key, pmtu)
    net.connect(A, B, 1111)
    net.connect(B, C, 2222)
    net.advance(1.0)
    return net


@pytest.mark.parametrize("key, mtu", [(None, 1438), (KEY, 1414)])
def test_mesh_of_three_establishes_and_verifies_mtu(key, mtu):
    net = line(key)
    for f in net.fwd.values():
        assert (f.state, f.mtu, f.stack_frag) == (ForwarderState.ESTABLISHED, mtu, True)
    established = sorted((me, e.peer) for me, e in net.events if isinstance(e, Established))
    assert established == [(A, B), (B, A), (B, C), (C, B)]
    verified = {(me, e.peer, e.mtu) for me, e in net.events if isinstance(e, MTUVerified)}
    assert verified == {(A, B, mtu), (B, A, mtu), (B, C, mtu), (C, B, mtu)}
    assert net.fwd[(B, A)].remote_addr == ADDR[A]  # learnt from A's heartbeat


@pytest.mark.parametrize("key", [None, KEY])
def test_broadcast_then_unicast_reply_relayed_by_the_middle(key):
    net = line(key)
    net.capture(A, ARP)
    assert net.injected[B] == [ARP] and net.injected[C] == [ARP] and net.injected[A] == []
    reply = MAC_A + MAC_C + b"\x08\x06" + bytes(28)
    net.capture(C, reply)
    assert net.injected[A] == [reply]
    assert net.injected[B] == [ARP]  # B relayed without injecting
    assert net.overlays[B].frame_router.macs.lookup(MAC_C) is None


def test_batched_frames_arrive_in_order():
    net = line()
    net.capture(A, ARP)
    net.capture(C, MAC_A + MAC_C + b"\x08\x06" + bytes(28))
    before = net.datagrams
    frames = [MAC_A + MAC_C + b"\x08\x00" + bytes([i]) * 60 for i in range(30)]
    for f in frames:
        net.queue.extend((C, a) for a in net.overlays[C].capture(f, net.now))
    net.pump()
    assert net.injected[A][1:] == frames
    # 88 bytes per frame on the wire, 1472-byte path payload: 16 + 14 frames per hop
    assert net.datagrams - before == 4


def test_df_too_big_gets_icmp_from_the_first_router():
    net = line()
    net.capture(C, MAC_A + MAC_C + b"\x08\x06" + bytes(28))  # A learns MAC_C at C
    net.injected[A].clear()
    big = ipv4_frame(MAC_C, MAC_A, bytes(1500), df=True)
    net.capture(A, big)
    (icmp,) = net.injected[A]
    assert icmp[:12] == MAC_A + MAC_C and icmp[34:36] == b"\x03\x04"
    assert int.from_bytes(icmp[40:42], "big") == 1438
    assert net.injected[C] == []


def test_df_too_big_for_the_second_link_gets_icmp_relayed_back():
    net = line(pmtu={frozenset((B, C)): 1400})
    assert net.fwd[(B, C)].mtu == 1338
    net.capture(C, MAC_A + MAC_C + b"\x08\x06" + bytes(28))
    net.injected[A].clear()
    frame = ipv4_frame(MAC_C, MAC_A, bytes(1418), df=True)  # exactly the A-B MTU
    net.capture(A, frame)
    assert net.injected[C] == []
    (icmp,) = net.injected[A]
    assert int.from_bytes(icmp[40:42], "big") == 1338


def test_heartbeats_stop_and_forwarders_fail():
    net = line()
    net.link_up = False
    net.advance(59.9)
    assert not any(isinstance(e, Failed) for _, e in net.events)
    net.advance(62.0)
    failed = sorted((me, e.peer) for me, e in net.events if isinstance(e, Failed))
    assert failed == [(A, B), (B, A), (B, C), (C, B)]


def test_drops_are_counted_by_reason():
    net = line()
    o = net.overlays[B]
    valid = fr.name_bytes(A) + fr.frame_header(A, B, 14) + bytes(14)
    cases = [
        (b"\xaa\x00", "short_packet"),
        (fr.name_bytes(0xAA0000000009) + bytes(20), "unknown_sender"),
        (fr.name_bytes(A) + fr.frame_header(A, B, 50) + bytes(3), "truncated_frame"),
        (fr.name_bytes(A) + bytes(5), "trailing_garbage"),
        (fr.name_bytes(A) + fr.frame_header(A, B, 10) + bytes(10), "short_frame"),
        (fr.name_bytes(A) + fr.frame_header(0xAA0000000009, B, 14) + bytes(14), "unknown_peer"),
        (fr.name_bytes(A) + fr.frame_header(A, C, 22) + fr.heartbeat_frame(1111), "stray_special"),
    ]
    for packet, reason in cases:
        assert o.receive(packet, ADDR[A], net.now) == []
        assert o.drops[reason] == 1, reason
    assert o.receive(valid, ADDR[A], net.now) == [SendControl(A, 3, b"\x00\x00")]  # 14-byte MTU test
    assert o.capture(bytes.fromhex("0180c2000000") + MAC_C + bytes(40), net.now) == []
    assert o.drop_counts() == {reason: 1 for _, reason in cases} | {"stp": 1}


def test_encrypted_replay_and_forgery_are_dropped():
    net = line(KEY)
    o = net.overlays[B]
    packer = NaClPacker(A, KEY, outbound=True, df=False)
    packer.seq = 10_000
    packer.append_frame(A, B, ARP)
    packet = packer.flush()
    assert o.receive(packet, ADDR[A], net.now) == [Inject(ARP)]
    assert o.receive(packet, ADDR[A], net.now) == []
    forged = packet[:14] + bytes(len(packet) - 14)
    assert o.receive(forged, ADDR[A], net.now) == []
    assert (o.drops["replay"], o.drops["decrypt_failed"]) == (1, 1)


@pytest.fixture(scope="module")
def nets():
    return {"plain": line(), "encrypted": line(KEY)}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["plain", "encrypted"]), st.sampled_from([A, C, 0xAA0000000009]), st.binary(max_size=120),
       st.booleans())
def test_random_datagrams_never_raise(nets, which, sender, tail, framed):
    o = nets[which].overlays[B]
    if framed:
        tail = fr.frame_header(sender, B, len(tail)) + tail
    actions = o.receive(fr.name_bytes(sender) + tail, ("203.0.113.9", 1), 5.0)
    assert all(isinstance(a, (Inject, SendControl, SendPacket)) for a in actions)
