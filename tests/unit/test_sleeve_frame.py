"""Sleeve packet codec against the real Weave Net 2.8 capture (spec §4)."""
from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.datapath.sleeve import frame as fr
from shared.weave.peer_name import PeerName
from shared.errors import RemoteProtocolError
from tests.reference import capture

H1 = PeerName.parse("aa:00:00:00:00:01")
H2 = PeerName.parse("aa:00:00:00:00:02")
DATAGRAMS = capture("sleeve")["udp_datagrams"]


def _decode(hex_payload: str):
    sender, body = fr.split_packet(bytes.fromhex(hex_payload))
    return sender, fr.iterate_frames(body)


def _kind(frame) -> str:
    """Classify a decoded frame the way the capture annotations do."""
    if not fr.is_special(frame):
        return "ethernet"
    if len(frame) == fr.HEARTBEAT_SIZE:
        return f"heartbeat connUID={fr.heartbeat_uid(frame)}"
    if len(frame) == fr.FRAG_TEST_SIZE:
        return "fragmentation test"
    return "PMTU verification test"


def test_capture_has_every_kind():
    kinds = {f["kind"].split(" ")[0] for d in DATAGRAMS for f in d["annotation"]["frames"]}
    assert kinds == {"heartbeat", "fragmentation", "PMTU", "ethernet:"}
    assert len(DATAGRAMS) == 79


@pytest.mark.parametrize("dgram", DATAGRAMS, ids=lambda d: str(d["index"]))
def test_capture_datagram_decodes_as_annotated(dgram):
    note = dgram["annotation"]
    sender, frames = _decode(dgram["hex"])
    assert str(PeerName(sender)) == note["sender_peer"]
    assert len(frames) == len(note["frames"])
    for (src, dst, frame), want in zip(frames, note["frames"]):
        assert str(PeerName(src)) == want["src_peer"]
        assert str(PeerName(dst)) == want["dst_peer"]
        assert len(frame) == want["len"]
        assert want["kind"].startswith(_kind(frame))
        if want["kind"].startswith("ethernet:"):
            _check_ethernet_summary(frame, want["kind"])
        if want["kind"].startswith("PMTU"):
            candidate = int(re.search(r"mtu candidate (\d+)", want["kind"]).group(1))
            assert bytes(frame) == fr.mtu_test_frame(candidate)


def _check_ethernet_summary(frame, kind: str):
    m = re.match(r"ethernet: (\S+) > (\S+) type 0x([0-9a-f]{4})", kind)
    src, dst, ethertype = m.groups()
    assert bytes(frame[0:6]).hex(":") == dst
    assert bytes(frame[6:12]).hex(":") == src
    assert bytes(frame[12:14]).hex() == ethertype


@pytest.mark.parametrize("dgram", DATAGRAMS, ids=lambda d: str(d["index"]))
def test_reencoding_gives_the_captured_bytes(dgram):
    wire = bytes.fromhex(dgram["hex"])
    sender, frames = _decode(dgram["hex"])
    packer = fr.PlainPacker(sender)
    for src, dst, frame in frames:
        packer.append_frame(src, dst, frame)
    assert packer.total_len() == len(wire)
    assert packer.flush() == wire


def test_special_frames_match_captured_bytes():
    by_kind = {}
    for d in DATAGRAMS:
        for f in d["annotation"]["frames"]:
            by_kind.setdefault(f["kind"].split(" ")[0], d)
    heartbeat = bytes.fromhex(by_kind["heartbeat"]["hex"])
    assert heartbeat == (
        fr.name_bytes(H2) + fr.frame_header(H2, H1, 22) + fr.heartbeat_frame(10344347972794233738)
    )
    frag = bytes.fromhex(by_kind["fragmentation"]["hex"])
    assert frag == fr.name_bytes(H2) + fr.frame_header(H2, H1, 60001) + fr.frag_test_frame()
    assert len(frag) == 60021


def test_multi_frame_datagram_of_acks():
    dgram = next(d for d in DATAGRAMS if d["index"] == 57)
    sender, frames = _decode(dgram["hex"])
    assert sender == H2 and len(frames) == 10
    assert {len(f) for _, _, f in frames} == {66}
    assert len(bytes.fromhex(dgram["hex"])) == 6 + 10 * (14 + 66) == 806


@pytest.mark.parametrize(
    "body, reason",
    [
        (fr.frame_header(H1, H2, 5) + b"abcd", "truncated_frame"),
        (fr.frame_header(H1, H2, 2) + b"ab" + b"\x00" * 13, "trailing_garbage"),
        (b"\x00" * 13, "trailing_garbage"),
    ],
)
def test_broken_bodies_are_rejected_whole(body, reason):
    with pytest.raises(fr.FrameDecodingError) as info:
        fr.iterate_frames(body)
    assert info.value.reason == reason
    assert isinstance(info.value, RemoteProtocolError)


def test_empty_body_and_short_packet():
    assert fr.iterate_frames(b"") == []
    with pytest.raises(fr.FrameDecodingError) as info:
        fr.split_packet(b"\xaa\x00\x00")
    assert info.value.reason == "short_packet"


def test_zero_length_frame_is_a_frame():
    (src, dst, frame), = fr.iterate_frames(fr.frame_header(H1, H2, 0))
    assert (src, dst, bytes(frame)) == (H1, H2, b"")


def test_special_classification():
    assert fr.is_special(fr.heartbeat_frame(1))
    assert fr.is_special(bytes(14))
    assert not fr.is_special(bytes(13))
    assert not fr.is_special(b"\x01" + bytes(21))
    assert fr.heartbeat_uid(fr.heartbeat_frame(0x0102030405060708)) == 0x0102030405060708
    assert fr.all_zeros(fr.frag_test_frame()) and not fr.all_zeros(bytes(100) + b"\x01")


frames_strategy = st.lists(
    st.tuples(st.integers(0, 2**48 - 1), st.integers(0, 2**48 - 1), st.binary(max_size=300)),
    max_size=8,
)


@given(st.integers(0, 2**48 - 1), frames_strategy)
def test_encode_decode_round_trip(sender, frames):
    packer = fr.PlainPacker(sender)
    for src, dst, frame in frames:
        packer.append_frame(src, dst, frame)
    wire = packer.flush()
    got_sender, body = fr.split_packet(wire)
    assert got_sender == sender
    assert [(s, d, bytes(f)) for s, d, f in fr.iterate_frames(body)] == frames
    assert packer.count == 0 and packer.total_len() == 6


@settings(max_examples=300)
@given(st.binary(max_size=200))
def test_random_packets_raise_only_the_documented_error(data):
    try:
        _, body = fr.split_packet(data)
        frames = fr.iterate_frames(body)
    except fr.FrameDecodingError as exc:
        assert exc.reason in {"short_packet", "truncated_frame", "trailing_garbage"}
        return
    assert sum(fr.FRAME_OVERHEAD + len(f) for _, _, f in frames) == len(data) - 6
