"""Sleeve forwarder state machine with an explicit clock (spec §4, sleeve.go)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.datapath.sleeve import frame as fr
from services.datapath.sleeve.crypto import NaClDecryptor
from services.datapath.sleeve.forwarder import (
    CONNECTION_ESTABLISHED,
    FRAGMENTATION_RECEIVED,
    PMTU_VERIFIED,
    Established,
    Failed,
    Forwarder,
    MTUVerified,
    SendControl,
    SendPacket,
    ForwarderState,
)
from shared.weave.peer_name import PeerName
from tests.reference import capture

H1 = PeerName.parse("aa:00:00:00:00:01")
H2 = PeerName.parse("aa:00:00:00:00:02")
UID = 3483067153807827470
"""connUID of the surviving h1-h2 connection in sleeve.pcap."""
ADDR_H2 = ("192.168.77.2", 6783)
KEY = bytes(range(32))
PLAIN = {d["index"]: bytes.fromhex(d["hex"]) for d in capture("sleeve")["udp_datagrams"]}
ENCRYPTED = {d["index"]: bytes.fromhex(d["hex"]) for d in capture("encrypted-handshake")["udp_datagrams"]}


def frames_of(packet: SendPacket):
    sender, body = fr.split_packet(packet.payload)
    return [(s, d, bytes(f)) for s, d, f in fr.iterate_frames(body)]


def established(now: float = 0.0, **kw) -> tuple[Forwarder, list]:
    """An outbound h1 forwarder to h2, confirmed at `now` and acked at now + 0.1."""
    f = Forwarder(H1, H2, UID, outbound=True, remote_addr=ADDR_H2, **kw)
    f.confirm(now)
    return f, f.control_message(CONNECTION_ESTABLISHED, b"", now + 0.1)


def test_confirm_sends_the_captured_heartbeat_then_fast_heartbeats():
    f = Forwarder(H1, H2, UID, outbound=True, remote_addr=ADDR_H2)
    assert f.state is ForwarderState.NEW and f.next_deadline() is None
    out = f.confirm(0.0)
    assert out == [SendPacket(PLAIN[1], ADDR_H2, True)]  # h1 -> h2 heartbeat, byte for byte
    assert f.state is ForwarderState.CONFIRMED
    assert f.next_deadline() == 0.5
    assert f.tick(0.49) == []
    assert [p.payload for p in f.tick(0.5)] == [PLAIN[1]]
    assert f.next_deadline() == 1.0
    assert len(f.tick(1.0)) == 1


def test_ack_moves_to_slow_heartbeats_frag_test_and_pmtu_probe():
    f = Forwarder(H1, H2, UID, outbound=True, remote_addr=ADDR_H2)
    f.confirm(0.0)
    out = f.control_message(CONNECTION_ESTABLISHED, b"", 0.2)
    assert f.state is ForwarderState.ESTABLISHED
    assert out[0] == Established(H2)
    assert out[1] == SendPacket(PLAIN[5], ADDR_H2, False)  # frag test, as captured
    probe = out[2]
    assert probe.df and frames_of(probe) == [(H1, H2, bytes(fr.PMTU_DISCOVERY_SIZE))]
    assert len(out) == 3
    assert f.next_deadline() == pytest.approx(10.2)
    assert f.tick(10.1) == []
    assert len(f.tick(10.2)) == 1
    assert f.next_deadline() == pytest.approx(20.2)


def test_first_valid_heartbeat_sends_connection_established_once():
    f = Forwarder(H1, H2, UID, outbound=True, remote_addr=ADDR_H2)
    f.confirm(0.0)
    assert f.special_frame(fr.heartbeat_frame(UID + 1), ADDR_H2, 0.1) == []  # other connection
    assert f.special_frame(fr.heartbeat_frame(UID), ADDR_H2, 0.2) == [SendControl(H2, CONNECTION_ESTABLISHED, b"")]
    assert f.special_frame(fr.heartbeat_frame(UID), ADDR_H2, 0.3) == []


def test_heartbeat_timeout_fails_and_heartbeats_rearm_it():
    f = Forwarder(H1, H2, UID, outbound=True, remote_addr=ADDR_H2)
    f.confirm(0.0)
    f.special_frame(fr.heartbeat_frame(UID), ADDR_H2, 30.0)
    f.control_message(CONNECTION_ESTABLISHED, b"", 30.0)
    for t in range(40, 90, 10):
        assert all(isinstance(a, SendPacket) for a in f.tick(float(t)))
    assert f.state is ForwarderState.ESTABLISHED
    out = f.tick(90.0)
    assert Failed(H2, "timed out waiting for UDP heartbeat") in out
    assert f.state is ForwarderState.FAILED and f.next_deadline() is None
    assert f.special_frame(fr.heartbeat_frame(UID), ADDR_H2, 91.0) == []
    assert f.tick(1000.0) == []


def test_inbound_forwarder_learns_address_from_first_heartbeat_and_follows_nat():
    f = Forwarder(H2, H1, UID, outbound=False)
    assert f.confirm(0.0) == []
    assert f.next_deadline() == 60.0  # no heartbeats without an address, only the timeout
    a, b = ("192.168.77.1", 6783), ("10.0.0.9", 40000)
    out = f.special_frame(fr.heartbeat_frame(UID), a, 0.1)
    assert out == [SendPacket(PLAIN[2], a, True), SendControl(H1, CONNECTION_ESTABLISHED, b"")]
    assert f.remote_addr == a and f.next_deadline() == pytest.approx(0.6)
    assert f.special_frame(fr.heartbeat_frame(UID), b, 0.3) == []
    assert f.remote_addr == b
    assert [p.addr for p in f.tick(0.6)] == [b]


def test_frag_test_and_its_ack():
    f, _ = established()
    assert f.special_frame(fr.frag_test_frame(), ADDR_H2, 1.0) == [SendControl(H2, FRAGMENTATION_RECEIVED, b"")]
    assert f.special_frame(bytes(60000) + b"\x01", ADDR_H2, 1.0) == []
    assert not f.stack_frag
    f.control_message(FRAGMENTATION_RECEIVED, b"", 1.0)
    assert f.stack_frag
    # every 5 minutes the test repeats, distrusting the stack until acked again
    for t in range(10, 300, 10):
        f.special_frame(fr.heartbeat_frame(UID), ADDR_H2, float(t))
        f.tick(float(t))
    assert f.stack_frag and f.state is ForwarderState.ESTABLISHED
    out = f.tick(300.1)
    assert not f.stack_frag
    assert any(not p.df and len(p.payload) == 60021 for p in out if isinstance(p, SendPacket))


def test_mtu_test_frame_is_answered_with_the_captured_pmtu_verified():
    f, _ = established()
    out = f.special_frame(bytes(1452), ADDR_H2, 1.0)
    assert out == [SendControl(H2, PMTU_VERIFIED, bytes.fromhex("059e"))]  # tag 7 body 070003059e


def test_control_messages_match_the_captured_tcp_messages():
    captured = [m["hex"] for m in capture("sleeve")["tcp_messages"]
                if m.get("tag") == 7 and m["stream"] == "h1:32773->h2:6783"]
    f = Forwarder(H1, H2, UID, outbound=True, remote_addr=ADDR_H2)
    f.confirm(0.0)
    sent = f.special_frame(fr.heartbeat_frame(UID), ADDR_H2, 0.01)
    sent += f.special_frame(fr.frag_test_frame(), ADDR_H2, 0.1)
    sent += f.special_frame(bytes(1452), ADDR_H2, 0.1)
    controls = [a for a in sent if isinstance(a, SendControl)]
    assert [c.mesh_message(0).hex() for c in controls] == captured == ["070001", "070002", "070003059e"]
    assert [c.mesh_message(None) for c in controls] == [b"\x01", b"\x02", b"\x03\x05\x9e"]


def test_first_mtu_test_matches_capture():
    f, _ = established()
    out = f.msg_too_big(1500, 0.2)
    assert out == [SendPacket(PLAIN[6], ADDR_H2, True)]  # 1472-byte h1 -> h2 PMTU test
    assert f.mtu == 1438 and f.max_payload == 1472


def run_pmtu_search(f: Forwarder, path_mtu: int, pmtu: int = 1500) -> tuple[list, float]:
    """Drive the search: MTU tests bigger than `path_mtu` are lost, others acked 1 ms later."""
    now = 1.0
    pending = f.msg_too_big(pmtu, now)
    verified = []
    while not verified:
        acks = []
        for action in pending:
            if isinstance(action, MTUVerified):
                verified.append(action)
            elif isinstance(action, SendPacket) and action.df:
                (_, _, frame), = frames_of(action)
                if fr.is_special(frame) and len(frame) - 14 <= path_mtu:
                    acks.append(len(frame) - 14)
        if verified:
            break
        if acks:
            now += 0.001
            pending = [a for size in acks for a in f.control_message(PMTU_VERIFIED, size.to_bytes(2, "big"), now)]
        else:
            now = f.next_deadline()
            pending = f.tick(now)
    return verified, now


@pytest.mark.parametrize("path_mtu, want", [(1438, 1438), (1400, 1400), (1000, 1000), (553, 553), (552, 552), (300, 552)])
def test_pmtu_search_converges_on_the_path_mtu(path_mtu, want):
    f, _ = established()
    verified, now = run_pmtu_search(f, path_mtu)
    assert verified == [MTUVerified(H2, want)]
    assert f.mtu == want and f.max_payload == want + f.overhead_df - fr.UDP_OVERHEAD
    assert f.mtu_candidate == 0 and f.mtu_test_at is None
    if path_mtu < 1438:
        assert now > 2.55  # at least one candidate ran through all 8 tries (10 ms doubling)


@settings(max_examples=25, deadline=None)
@given(st.integers(552, 1438))
def test_pmtu_search_property(path_mtu):
    f, _ = established()
    verified, _ = run_pmtu_search(f, path_mtu)
    assert verified == [MTUVerified(H2, path_mtu)]


def test_mtu_test_retries_double_then_candidate_fails():
    f, _ = established()
    f.msg_too_big(1500, 0.0)
    times = [0.0]
    for _ in range(7):
        t = f.next_deadline()
        out = f.tick(t)
        assert len(out) == 1 and out[0].df
        times.append(t)
    gaps = [round(b - a, 6) for a, b in zip(times, times[1:])]
    assert gaps == [0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64]
    out = f.tick(f.next_deadline())  # 8th timeout: give up on 1438, try the midpoint
    (_, _, frame), = frames_of(out[0])
    assert f.mtu_candidate == (552 + 1438) // 2 == len(frame) - 14


def test_pmtu_acks_for_other_candidates_and_truncated_acks_are_ignored():
    f, _ = established()
    f.msg_too_big(1500, 0.0)
    assert f.control_message(PMTU_VERIFIED, (1000).to_bytes(2, "big"), 0.001) == []
    assert f.control_message(PMTU_VERIFIED, b"\x05", 0.001) == []
    assert f.control_message(99, b"", 0.001) == []
    assert f.mtu_candidate == 1438
    # a second EMSGSIZE with a larger figure does not restart a running search
    assert f.msg_too_big(9000, 0.002) == []


def test_encrypted_forwarders_reproduce_captured_sequence_numbers():
    # h2 dialled h1 in encrypted-handshake.pcap: h2 is outbound, h1 inbound.
    h2 = Forwarder(H2, H1, UID, outbound=True, remote_addr=("h1", 6783), session_key=KEY)
    sent = h2.confirm(0.0) + h2.tick(0.5)
    sent += h2.control_message(CONNECTION_ESTABLISHED, b"", 0.51)[1:]
    sent += h2.msg_too_big(1500, 0.52)  # the 60000-byte probe was refused by the kernel
    packets = [a for a in sent if isinstance(a, SendPacket)]
    on_wire = [p for p in packets if len(p.payload) != 6 + 8 + 16 + 14 + 60000]
    assert [p.payload[:14] for p in on_wire] == [ENCRYPTED[i][:14] for i in (0, 1, 3, 4)]
    assert [len(p.payload) for p in on_wire] == [len(ENCRYPTED[i]) for i in (0, 1, 3, 4)]
    # and h1 (inbound, same session key) can open all of them
    h1 = NaClDecryptor(KEY, outbound=False)
    for p in packets:
        (src, dst, frame), = fr.iterate_frames(h1.open(fr.split_packet(p.payload)[1]))
        assert (src, dst) == (H2, H1) and fr.is_special(frame)


def test_batching_up_to_100_frames_and_the_path_payload():
    f, _ = established()
    f.flush()
    for i in range(100):
        assert f.forward(H1, H2, bytes([i]) * 20, df=False) is None
    full = f.forward(H1, H2, b"last", df=False)
    assert len(frames_of(full)) == 100 and not full.df
    (rest,) = f.flush()
    assert frames_of(rest) == [(H1, H2, b"last")]
    f.max_payload = 1472
    assert f.forward(H1, H2, bytes(700), df=True) is None
    assert f.forward(H1, H2, bytes(700), df=True) is None  # 6 + 2 * 714 = 1434 fits
    two = f.forward(H1, H2, bytes(700), df=True)
    assert two.df and len(two.payload) == 1434
    assert f.forward(H1, H2, bytes(1500), df=True).payload and f.oversized == 1  # flushed the 1 pending
    assert f.flush() == []
    assert f.forward(H1, H2, bytes(1500), df=False) is None  # non-DF may fragment: up to 65507
    assert len(f.flush()[0].payload) == 6 + 14 + 1500


def test_special_frames_flush_the_pending_batch_first():
    f, _ = established()
    f.forward(H1, H2, b"data", df=True)
    out = f.tick(f.next_deadline())
    assert [frames_of(p)[0][2] for p in out] == [b"data", fr.heartbeat_frame(UID)]


def test_stop_and_events_before_confirm():
    f = Forwarder(H1, H2, UID, outbound=True, remote_addr=ADDR_H2)
    assert f.control_message(CONNECTION_ESTABLISHED, b"", 0.0) == []
    assert f.special_frame(fr.heartbeat_frame(UID), ADDR_H2, 0.0) == []
    assert f.state is ForwarderState.NEW
    f.confirm(0.0)
    f.stop()
    assert f.state is ForwarderState.STOPPED and f.next_deadline() is None
    assert f.tick(100.0) == [] and f.confirm(1.0) == []


def in_state(state: ForwarderState) -> Forwarder:
    f = Forwarder(H1, H2, UID, outbound=True, remote_addr=ADDR_H2)
    if state is not ForwarderState.NEW:
        f.confirm(0.0)
    if state is ForwarderState.ESTABLISHED:
        f.control_message(CONNECTION_ESTABLISHED, b"", 0.1)
    if state is ForwarderState.FAILED:
        f.tick(60.0)
    if state is ForwarderState.STOPPED:
        f.stop()
    assert f.state is state
    return f


EVENTS = {
    "confirm": lambda f: f.confirm(1.0),
    "ack": lambda f: f.control_message(CONNECTION_ESTABLISHED, b"", 1.0),
    "heartbeat": lambda f: f.special_frame(fr.heartbeat_frame(UID), ADDR_H2, 1.0),
    "timeout": lambda f: f.tick(61.0),
    "mtu test": lambda f: f.special_frame(bytes(100), ADDR_H2, 1.0),
    "stop": lambda f: f.stop(),
}


@pytest.mark.parametrize("state, event, next_state, actions", [
    (ForwarderState.NEW, "confirm", ForwarderState.CONFIRMED, [SendPacket]),
    (ForwarderState.NEW, "ack", ForwarderState.NEW, []),
    (ForwarderState.NEW, "heartbeat", ForwarderState.NEW, []),
    (ForwarderState.NEW, "mtu test", ForwarderState.NEW, []),
    (ForwarderState.NEW, "stop", ForwarderState.STOPPED, []),
    (ForwarderState.CONFIRMED, "confirm", ForwarderState.CONFIRMED, []),
    (ForwarderState.CONFIRMED, "ack", ForwarderState.ESTABLISHED, [Established, SendPacket, SendPacket]),
    (ForwarderState.CONFIRMED, "heartbeat", ForwarderState.CONFIRMED, [SendControl]),
    (ForwarderState.CONFIRMED, "mtu test", ForwarderState.CONFIRMED, [SendControl]),
    (ForwarderState.CONFIRMED, "timeout", ForwarderState.FAILED, [Failed]),
    (ForwarderState.ESTABLISHED, "ack", ForwarderState.ESTABLISHED, [SendPacket, SendPacket]),
    (ForwarderState.ESTABLISHED, "heartbeat", ForwarderState.ESTABLISHED, [SendControl]),
    (ForwarderState.ESTABLISHED, "stop", ForwarderState.STOPPED, []),
    (ForwarderState.FAILED, "heartbeat", ForwarderState.FAILED, []),
    (ForwarderState.FAILED, "ack", ForwarderState.FAILED, []),
    (ForwarderState.STOPPED, "confirm", ForwarderState.STOPPED, []),
    (ForwarderState.STOPPED, "mtu test", ForwarderState.STOPPED, []),
])
def test_state_table(state, event, next_state, actions):
    f = in_state(state)
    out = EVENTS[event](f)
    assert f.state is next_state
    assert [type(a) for a in out if not (event == "timeout" and isinstance(a, SendPacket))] == actions


def test_a_heartbeat_due_soon_goes_at_an_earlier_wake_up_but_never_more_than_half_early():
    f, _ = established()
    due = f.heartbeat_at  # slow heartbeats now: every 10 s
    assert f.heartbeat_interval == 10.0
    assert [p for p in f.tick(due - 1.5, early=1.0) if isinstance(p, SendPacket)] == []  # not yet
    sent = [p for p in f.tick(due - 0.8, early=1.0) if isinstance(p, SendPacket)]
    assert [p.payload for p in sent] == [PLAIN[1]]  # the heartbeat, as captured from Weave
    assert f.heartbeat_at == pytest.approx(due - 0.8 + 10.0)  # re-armed from when it went
    assert [p for p in f.tick(due - 0.7, early=1.0) if isinstance(p, SendPacket)] == []  # once
    # fast heartbeats (every 0.5 s) go at most 0.25 s early
    g = Forwarder(H1, H2, UID, outbound=True, remote_addr=ADDR_H2)
    g.confirm(0.0)
    assert g.tick(0.2, early=1.0) == []  # 0.3 s before it is due: more than half its interval
    assert len(g.tick(0.3, early=1.0)) == 1 and g.heartbeat_at == pytest.approx(0.8)
