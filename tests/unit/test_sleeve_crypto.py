"""Encrypted sleeve packets: clear header, DF/non-DF sequences, polarity, replay windows."""
from __future__ import annotations

from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.bindings import crypto_secretbox_open

from services.datapath.sleeve import crypto as cr
from services.datapath.sleeve import frame as fr
from shared.weave.peer_name import PeerName
from services.gossip.protocol_crypto import sleeve_nonce
from shared.errors import RemoteProtocolError
from tests.reference import capture

KEY = bytes(range(32))
H1 = PeerName.parse("aa:00:00:00:00:01")
H2 = PeerName.parse("aa:00:00:00:00:02")
ENCRYPTED = capture("encrypted-handshake")["udp_datagrams"]


def test_encrypted_capture_clear_headers():
    assert len(ENCRYPTED) == 31
    for d in ENCRYPTED:
        wire = bytes.fromhex(d["hex"])
        sender, body = fr.split_packet(wire)
        df, seq = cr.parse_clear_header(body)
        note = d["annotation"]
        assert (str(PeerName(sender)), df, seq) == (note["sender_peer"], note["df"], note["seq"])
        assert len(body) - cr.SEQ_SIZE == note["secretbox_len"] == len(wire) - 14


def test_encrypted_capture_sequence_numbers_per_df_class():
    seqs = defaultdict(list)
    for d in ENCRYPTED:
        note = d["annotation"]
        seqs[(note["sender_peer"], note["df"])].append(note["seq"])
    # DF: each router's gap is the 60000-byte PMTU probe that the kernel refused.
    assert seqs[("aa:00:00:00:00:02", True)] == [0, 1, 3]
    assert seqs[("aa:00:00:00:00:01", True)] == [0, 2, 3]
    for peer in ("aa:00:00:00:00:01", "aa:00:00:00:00:02"):
        non_df = seqs[(peer, False)]
        assert non_df == list(range(len(non_df)))
    assert len(seqs[("aa:00:00:00:00:01", False)]) + len(seqs[("aa:00:00:00:00:02", False)]) == 25


def test_encrypted_capture_sizes_match_our_overheads():
    heartbeat = next(d for d in ENCRYPTED if d["len"] == 66)
    assert heartbeat["len"] == cr.ENCRYPTED_PACKET_OVERHEAD + fr.FRAME_OVERHEAD + fr.HEARTBEAT_SIZE
    frag = next(d for d in ENCRYPTED if d["len"] == 60045)
    assert frag["len"] == cr.ENCRYPTED_PACKET_OVERHEAD + fr.FRAME_OVERHEAD + fr.FRAG_TEST_SIZE
    mtu_test = next(d for d in ENCRYPTED if d["len"] == 1472)
    assert mtu_test["len"] == cr.ENCRYPTED_PACKET_OVERHEAD + fr.FRAME_OVERHEAD + 1414 + 14


def _pack(packer, frames):
    for src, dst, f in frames:
        packer.append_frame(src, dst, f)
    return packer.flush()


@pytest.mark.parametrize("a_outbound", [True, False])
def test_round_trip_between_two_ends_with_polarity(a_outbound):
    a_send = cr.NaClPacker(H1, KEY, outbound=a_outbound, df=False)
    b_recv = cr.NaClDecryptor(KEY, outbound=not a_outbound)
    a_recv_own = cr.NaClDecryptor(KEY, outbound=a_outbound)
    frames = [(H1, H2, b"frame one"), (H1, H2, bytes(1400))]
    wire = _pack(a_send, frames)
    assert len(wire) == a_send.packet_overhead + 2 * fr.FRAME_OVERHEAD + 9 + 1400
    sender, body = fr.split_packet(wire)
    assert sender == H1
    plain = b_recv.open(body)
    assert [(s, d, bytes(f)) for s, d, f in fr.iterate_frames(plain)] == frames
    with pytest.raises(cr.DecryptionError) as info:
        a_recv_own.open(body)  # our own packets carry the other polarity bit
    assert info.value.reason == "decrypt_failed" and info.value.seq == 0


def test_nonce_is_protocol_crypto_sleeve_nonce():
    packer = cr.NaClPacker(H2, KEY, outbound=True, df=True)
    packer.seal(b"warm-up")
    wire = packer.seal(b"payload")
    word = int.from_bytes(wire[6:14], "big")
    assert word == (1 << 63) | 1
    assert crypto_secretbox_open(wire[14:], sleeve_nonce(True, word), KEY) == b"payload"


def test_df_and_non_df_counters_are_independent():
    plain = cr.NaClPacker(H1, KEY, outbound=True, df=False)
    df = cr.NaClPacker(H1, KEY, outbound=True, df=True)
    words = [plain.seal(b"x")[6:14], df.seal(b"x")[6:14], df.seal(b"x")[6:14], plain.seal(b"x")[6:14]]
    assert [w.hex() for w in words] == [
        "0000000000000000", "8000000000000000", "8000000000000001", "0000000000000001",
    ]
    receiver = cr.NaClDecryptor(KEY, outbound=False)
    # Same counter value on both channels: different nonces, both accepted once.
    a = plain.seal(b"p")
    b = df.seal(b"d")
    assert int.from_bytes(a[6:14], "big") & cr.SEQ_MASK == int.from_bytes(b[6:14], "big") & cr.SEQ_MASK
    assert receiver.open(a[6:]) == b"p" and receiver.open(b[6:]) == b"d"
    assert receiver.open(a[6:]) is None and receiver.open(b[6:]) is None


W = 1 << cr.WINDOW_BITS


@pytest.mark.parametrize(
    "steps",
    [
        # in order, then duplicates
        [(0, True), (1, True), (2, True), (1, False), (2, False), (3, True)],
        # out of order inside the window
        [(5, True), (3, True), (4, True), (3, False), (0, True)],
        # slide by one window: the previous window is still checked
        [(7, True), (W + 1, True), (7, False), (8, True), (W + 1, False), (W + 2, True)],
        # older than the previous window: dropped even if never seen
        [(W * 2, True), (5, False), (W + 5, True), (W + 5, False)],
        # a jump of more than one window resets both sets
        [(3, True), (W * 5 + 3, True), (W * 4 + 3, True), (3, False), (W * 5 + 3, False)],
        # slide twice in a row: the old current becomes previous each time
        [(1, True), (W + 1, True), (2 * W + 1, True), (W + 1, False), (W + 2, True), (1, False)],
    ],
)
def test_replay_window_table(steps):
    window = cr.ReplayWindow()
    assert [window.accept(seq) for seq, _ in steps] == [want for _, want in steps]


def test_replay_window_tracks_current_window():
    window = cr.ReplayWindow()
    window.accept(3 * W + 9)
    assert window.current_window == 3
    window.accept(2 * W)  # previous window: does not move it back
    assert window.current_window == 3


def test_forged_packet_does_not_move_the_window():
    sender = cr.NaClPacker(H1, KEY, outbound=True, df=False)
    receiver = cr.NaClDecryptor(KEY, outbound=False)
    genuine = sender.seal(b"first")
    forged = fr.name_bytes(H1) + ((1 << 62)).to_bytes(8, "big") + bytes(40)
    with pytest.raises(cr.DecryptionError) as info:
        receiver.open(forged[6:])
    assert (info.value.reason, info.value.df, info.value.seq) == ("decrypt_failed", False, 1 << 62)
    assert receiver.windows[False].current_window == 0
    assert receiver.open(genuine[6:]) == b"first"
    assert receiver.open(genuine[6:]) is None  # replay, dropped silently


def test_tampered_ciphertext_and_flipped_df_bit_fail():
    sender = cr.NaClPacker(H1, KEY, outbound=True, df=False)
    receiver = cr.NaClDecryptor(KEY, outbound=False)
    wire = bytearray(sender.seal(b"payload"))
    flipped = bytearray(wire)
    flipped[6] |= 0x80
    wire[-1] ^= 1
    for bad in (wire, flipped):
        with pytest.raises(cr.DecryptionError):
            receiver.open(memoryview(bytes(bad))[6:])


@pytest.mark.parametrize("length, reason", [(0, "short_encrypted_packet"), (7, "short_encrypted_packet"),
                                            (8, "decrypt_failed"), (23, "decrypt_failed")])
def test_short_bodies(length, reason):
    with pytest.raises(cr.DecryptionError) as info:
        cr.NaClDecryptor(KEY, outbound=False).open(bytes(length))
    assert info.value.reason == reason


@settings(max_examples=300)
@given(st.binary(max_size=120))
def test_random_bodies_raise_only_decryption_error(body):
    with pytest.raises(RemoteProtocolError) as info:
        cr.NaClDecryptor(KEY, outbound=True).open(body)
    assert isinstance(info.value, cr.DecryptionError)


def test_a_resumed_sender_never_reuses_a_nonce_and_the_receiver_takes_the_jump():
    """After a datapath restart the connection (and key) survive: the new sender starts far
    above the old one's counter, and the receiver's windows accept the jump."""
    from services.datapath.sleeve.crypto import NaClDecryptor, NaClPacker, parse_clear_header

    key = bytes(range(32))
    old = NaClPacker(0xAA0000000001, key, outbound=True, df=False)
    receiver = NaClDecryptor(key, outbound=False)
    old_packets = [old.seal(b"frame %d" % i) for i in range(5)]
    for p in old_packets:
        assert receiver.open(memoryview(p)[6:]) is not None
    new = NaClPacker(0xAA0000000001, key, outbound=True, df=False, first_seq=1_795_988_000_000_000)
    fresh = new.seal(b"after restart")
    assert parse_clear_header(memoryview(fresh)[6:])[1] == 1_795_988_000_000_000
    assert receiver.open(memoryview(fresh)[6:]) == b"after restart"
    assert receiver.open(memoryview(old_packets[1])[6:]) is None, "the pre-restart sequence space is closed"
    assert receiver.open(memoryview(fresh)[6:]) is None, "a replay of the new packet is refused"
