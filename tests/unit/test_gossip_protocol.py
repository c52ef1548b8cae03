"""Mesh TCP connection core: handshake, framing, features, crypto (spec §1, §3)."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.bindings import crypto_secretbox_open

from shared.weave.peer_name import PeerName
from services.gossip.protocol import (
    HEADER_TIMEOUT,
    MAX_TCP_MSG_SIZE,
    READ_TIMEOUT,
    TCP_HEARTBEAT,
    HandshakeComplete,
    MeshProtocol,
    MeshProtocolError,
    MessageReceived,
    ProtocolTag,
    ProtocolState,
    make_features,
    parse_features,
)
from services.gossip.protocol_crypto import form_session_key, public_key_of, tcp_nonce
from shared import gob
from shared.errors import LocalProtocolError, RemoteProtocolError
from tests.reference import capture

A_KEY = bytes(range(1, 33))
B_KEY = bytes(range(101, 133))
A_FEATURES = make_features(PeerName.parse("aa:00:00:00:00:01"), "h1", 11, 0x0F0F,
                           short_id=7, trusted=False, overlays=["sleeve"])
B_FEATURES = make_features(PeerName.parse("aa:00:00:00:00:02"), "h2", 22, 0xF0F1)
PLAIN_HEADER = b"weave\x01\x02\x00"
FEATURES_TYPE = gob.Map(gob.STRING, gob.STRING)


def frame(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


def features_frame(features: dict[str, str]) -> bytes:
    return frame(gob.encode(FEATURES_TYPE, features))


def core(outbound=False, password=None, features=None, key=None, **kw) -> MeshProtocol:
    c = MeshProtocol(outbound, password, features or B_FEATURES, private_key=key, **kw)
    c.initiate()
    return c


def pair(password_a=None, password_b=None):
    """A dials B; both write their intro, then bytes are pumped until quiet."""
    a = MeshProtocol(True, password_a, A_FEATURES, private_key=A_KEY)
    b = MeshProtocol(False, password_b, B_FEATURES, private_key=B_KEY)
    events = {"a": [], "b": []}
    to_b, to_a = a.initiate(), b.initiate()
    while to_a or to_b:
        events["b"] += b.receive_data(to_b)
        events["a"] += a.receive_data(to_a)
        to_b, to_a = a.data_to_send(), b.data_to_send()
    return a, b, events


# --- features -------------------------------------------------------------------------


def test_make_features_full_and_minimal():
    assert A_FEATURES == {
        "PeerNameFlavour": "mac", "Name": "aa:00:00:00:00:01", "NickName": "h1",
        "UID": "11", "ConnID": "3855", "ShortID": "7", "Trusted": "false",
        "Overlays": "sleeve",
    }
    assert make_features(PeerName(1), "n", 2**64 - 1, 0, trusted=True,
                         overlays=["fastdp", "sleeve"]) == {
        "PeerNameFlavour": "mac", "Name": "00:00:00:00:00:01", "NickName": "n",
        "UID": "18446744073709551615", "ConnID": "0", "Trusted": "true",
        "Overlays": "fastdp sleeve",
    }


def test_parse_features_reads_typed_values():
    remote = parse_features(A_FEATURES)
    assert (remote.name, remote.nickname, remote.uid, remote.conn_id) == (
        PeerName(0xAA0000000001), "h1", 11, 0x0F0F)
    assert (remote.short_id, remote.trusted) == (7, False)
    bare = parse_features(B_FEATURES)
    assert (bare.short_id, bare.trusted) == (None, False)


@pytest.mark.parametrize(
    "change,reason",
    [
        ({"PeerNameFlavour": None}, "missing_feature"),
        ({"Name": None}, "missing_feature"),
        ({"NickName": None}, "missing_feature"),
        ({"UID": None}, "missing_feature"),
        ({"ConnID": None}, "missing_feature"),
        ({"PeerNameFlavour": "hash"}, "flavour_mismatch"),
        ({"Name": "aa:00:00:00:00"}, "bad_name"),
        ({"Name": "zz:00:00:00:00:01"}, "bad_name"),
        ({"UID": "-1"}, "bad_uid"),
        ({"UID": "+1"}, "bad_uid"),
        ({"UID": " 1"}, "bad_uid"),
        ({"UID": "1_0"}, "bad_uid"),
        ({"UID": "18446744073709551616"}, "bad_uid"),
        ({"UID": "\u0661"}, "bad_uid"),  # a non-ASCII digit
        ({"UID": "1" * 5000}, "bad_uid"),  # beyond Python's int() digit limit
        ({"UID": "0" * 5000 + "18446744073709551616"}, "bad_uid"),
        ({"ConnID": ""}, "bad_conn_id"),
        ({"ConnID": "0x10"}, "bad_conn_id"),
        ({"ShortID": "4096"}, "bad_short_id"),
        ({"ShortID": "abc"}, "bad_short_id"),
        ({"Trusted": "yes"}, "bad_trusted"),
    ],
)
def test_parse_features_rejects(change, reason):
    features = dict(A_FEATURES)
    for key, value in change.items():
        if value is None:
            del features[key]
        else:
            features[key] = value
    with pytest.raises(MeshProtocolError) as info:
        parse_features(features)
    assert info.value.reason == reason


def test_uint_features_accept_leading_zeros_like_go():
    remote = parse_features({**A_FEATURES, "UID": "0" * 5000 + "18446744073709551615",
                             "ConnID": "007", "ShortID": "04095"})
    assert (remote.uid, remote.conn_id, remote.short_id) == (2**64 - 1, 7, 4095)


def test_missing_features_reported_in_mesh_order():
    with pytest.raises(MeshProtocolError) as info:
        parse_features({"Name": "aa:00:00:00:00:01"})
    assert info.value.feature == "PeerNameFlavour"
    assert str(info.value) == "Field PeerNameFlavour is missing"


@pytest.mark.parametrize("text,value", [("1", True), ("T", True), ("True", True),
                                        ("0", False), ("FALSE", False), ("f", False)])
def test_trusted_accepts_go_booleans(text, value):
    assert parse_features({**A_FEATURES, "Trusted": text}).trusted is value


# --- in-memory handshake ---------------------------------------------------------------


def test_initiate_bytes():
    assert MeshProtocol(True, None, A_FEATURES).initiate() == PLAIN_HEADER
    encrypted = MeshProtocol(True, b"pw", A_FEATURES, private_key=A_KEY).initiate()
    assert encrypted == b"weave\x01\x02\x01" + public_key_of(A_KEY)
    assert len(MeshProtocol(True, b"pw", A_FEATURES).initiate()) == 40


def test_plain_handshake_and_messages():
    a, b, events = pair()
    [done_a], [done_b] = events["a"], events["b"]
    assert done_a.features == B_FEATURES and done_b.features == A_FEATURES
    assert done_a.conn_uid == done_b.conn_uid == 0x0F0F ^ 0xF0F1
    assert (done_a.remote_name, done_a.remote_uid, done_a.remote_nickname) == (
        PeerName(0xAA0000000002), 22, "h2")
    assert (done_b.remote_short_id, done_b.trusted_by_remote) == (7, False)
    assert (done_a.version, done_a.encrypted, done_a.session_key) == (2, False, None)
    assert a.state is b.state is ProtocolState.OPEN
    wire = a.send_message(ProtocolTag.GOSSIP, b"hello")
    assert wire == b"\x00\x00\x00\x06\x04hello"
    assert b.receive_data(wire) == [MessageReceived(4, b"hello")]
    assert a.receive_data(b.send_message(ProtocolTag.HEARTBEAT, b"")) == [
        MessageReceived(ProtocolTag.HEARTBEAT, b"")]


def test_features_queued_only_after_peer_flag():
    a = MeshProtocol(True, None, A_FEATURES)
    a.initiate()
    assert a.data_to_send() == b""
    assert a.receive_data(b"weave\x01\x02") == []
    assert a.data_to_send() == b""
    assert a.receive_data(b"\x00") == []
    assert a.data_to_send() == features_frame(A_FEATURES)
    assert a.data_to_send() == b""
    assert a.state is ProtocolState.AWAIT_FEATURES


def test_encrypted_handshake_same_key_and_sequence_numbers():
    a, b, events = pair(b"secret", b"secret")
    [done_a], [done_b] = events["a"], events["b"]
    expected_key = form_session_key(public_key_of(B_KEY), A_KEY, b"secret")
    assert done_a.session_key == done_b.session_key == expected_key
    assert done_a.encrypted and done_b.encrypted
    assert b.remote_public_key == public_key_of(A_KEY)
    for seq in (1, 2, 3):  # the features message used sequence number 0
        wire = a.send_message(ProtocolTag.GOSSIP, b"m%d" % seq)
        assert len(wire) == 4 + 1 + 2 + 16
        plain = crypto_secretbox_open(wire[4:], tcp_nonce(True, seq), expected_key)
        assert plain == b"\x04m%d" % seq
        assert b.receive_data(wire) == [MessageReceived(4, b"m%d" % seq)]
        back = b.send_message(ProtocolTag.OVERLAY_CONTROL, b"r")
        assert crypto_secretbox_open(back[4:], tcp_nonce(False, seq), expected_key) == b"\x07r"
        assert a.receive_data(back) == [MessageReceived(7, b"r")]


def test_encrypted_empty_message_ignored_but_counted():
    a, b, _ = pair(b"pw", b"pw")
    empty = a._encryptor.encrypt(b"")
    assert b.receive_data(frame(empty)) == []
    assert b.receive_data(a.send_message(4, b"x")) == [MessageReceived(4, b"x")]


def test_plain_empty_message_ignored_and_unknown_tag_surfaced():
    a, b, _ = pair()
    assert b.receive_data(frame(b"") + frame(b"\x63zz")) == [MessageReceived(0x63, b"zz")]


def test_send_message_before_open_is_local_error():
    a = MeshProtocol(True, None, A_FEATURES)
    a.initiate()
    with pytest.raises(LocalProtocolError):
        a.send_message(4, b"x")


def test_send_flushes_pending_bytes_first():
    # Features still undrained when the peer's features arrive: send_message must
    # put them first on the wire.
    a = core(outbound=True, features=A_FEATURES)
    a.receive_data(PLAIN_HEADER + features_frame(B_FEATURES))
    wire = a.send_message(0, b"")
    assert wire == features_frame(A_FEATURES) + b"\x00\x00\x00\x01\x00"


def test_local_misuse():
    with pytest.raises(LocalProtocolError):
        MeshProtocol(True, None, {**A_FEATURES, "ConnID": "x"})
    with pytest.raises(LocalProtocolError):
        MeshProtocol(True, None, A_FEATURES, max_version=3)
    a = MeshProtocol(True, None, A_FEATURES)
    with pytest.raises(LocalProtocolError):
        a.receive_data(PLAIN_HEADER)
    a.initiate()
    with pytest.raises(LocalProtocolError):
        a.initiate()


def test_read_timeout_phases():
    assert (TCP_HEARTBEAT, READ_TIMEOUT, HEADER_TIMEOUT) == (30.0, 60.0, 10.0)
    a = core()
    assert a.read_timeout == HEADER_TIMEOUT
    a.receive_data(b"weave\x01\x02")
    assert a.read_timeout == READ_TIMEOUT


# --- violations ------------------------------------------------------------------------


def violation(c: MeshProtocol, data: bytes) -> MeshProtocolError:
    with pytest.raises(RemoteProtocolError) as info:
        c.receive_data(data)
    assert c.state is ProtocolState.CLOSED
    return info.value


@pytest.mark.parametrize(
    "header,reason,message",
    [
        (b"weave\x03\x04", "version_mismatch",
         "remote version range [3,4] is incompatible with ours [1,2]"),
        (b"weave\x01\x01", "unsupported_version", "unsupported protocol version 1"),
        (b"weave\x00\x01", "unsupported_version", "unsupported protocol version 1"),
        (b"weave\x02\x01", "version_mismatch",
         "remote version range [2,1] is incompatible with ours [1,2]"),
    ],
)
def test_version_negotiation_failures(header, reason, message):
    err = violation(core(), header)
    assert (err.reason, str(err)) == (reason, message)


def test_version_negotiation_picks_min_of_maxes():
    c = core()
    c.receive_data(b"weave\x02\x09")
    assert c.version == 2
    assert violation(core(min_version=2), b"weave\x01\x01").reason == "version_mismatch"


@pytest.mark.parametrize("data", [b"x", b"WEAVE\x01\x02", b"weav\x00", b"weave"[:3] + b"X"])
def test_garbage_magic_fails_at_first_wrong_byte(data):
    assert violation(core(), data).reason == "bad_magic"


def test_incomplete_magic_waits():
    assert core().receive_data(b"wea") == []


def test_password_only_here():
    err = violation(core(password=b"pw"), PLAIN_HEADER)
    assert err.reason == "expected_crypto"
    assert str(err) == "password specified, but peer requested an unencrypted connection"


def test_password_only_there():
    err = violation(core(), b"weave\x01\x02\x01")
    assert err.reason == "expected_no_crypto"
    assert str(err) == "no password specificed, but peer requested an encrypted connection"


@pytest.mark.parametrize("passwords", [(b"pw", None), (None, b"pw")])
def test_password_on_one_side_fails_both_ends(passwords):
    a = MeshProtocol(True, passwords[0], A_FEATURES)
    b = MeshProtocol(False, passwords[1], B_FEATURES)
    to_b, to_a = a.initiate(), b.initiate()
    reasons = {violation(a, to_a).reason, violation(b, to_b).reason}
    assert reasons == {"expected_crypto", "expected_no_crypto"}


def test_bad_encryption_flag():
    err = violation(core(), b"weave\x01\x02\x02")
    assert (err.reason, err.flag, str(err)) == ("bad_encryption_flag", 2, "Bad encryption flag 2")


def test_wrong_password_fails_decrypt_on_both_ends():
    a = MeshProtocol(True, b"one", A_FEATURES)
    b = MeshProtocol(False, b"two", B_FEATURES)
    to_b, to_a = a.initiate(), b.initiate()
    assert a.receive_data(to_a) == [] and b.receive_data(to_b) == []
    assert a.session_key != b.session_key
    assert violation(a, b.data_to_send()).reason == "decrypt_failed"
    assert violation(b, a.data_to_send()).reason == "decrypt_failed"


def test_frame_over_cap_rejected_from_prefix_alone():
    c = core()
    c.receive_data(PLAIN_HEADER + features_frame(A_FEATURES))
    err = violation(c, (MAX_TCP_MSG_SIZE + 1).to_bytes(4, "big"))
    assert (err.reason, err.length) == ("frame_too_large", MAX_TCP_MSG_SIZE + 1)


def test_frame_at_cap_accepted():
    c = core()
    c.receive_data(PLAIN_HEADER + features_frame(A_FEATURES))
    body = b"\x04" + bytes(MAX_TCP_MSG_SIZE - 1)
    [event] = c.receive_data(frame(body))
    assert (event.tag, len(event.payload)) == (4, MAX_TCP_MSG_SIZE - 1)


@pytest.mark.parametrize("password,overhead", [(None, 0), (b"pw", 16)])
def test_send_cap_counts_wire_bytes(password, overhead):
    a, b, _ = pair(password, password)
    fits = MAX_TCP_MSG_SIZE - 1 - overhead
    biggest = a.send_message(4, bytes(fits))
    assert len(biggest) == 4 + MAX_TCP_MSG_SIZE
    assert [len(e.payload) for e in b.receive_data(biggest)] == [fits]
    with pytest.raises(LocalProtocolError):
        a.send_message(4, bytes(fits + 1))
    # A refused send does not consume a sequence number: the peer still decrypts.
    assert len(b.receive_data(a.send_message(4, b"after"))) == 1


def test_undecodable_features():
    err = violation(core(), PLAIN_HEADER + frame(b"\x05garbage"))
    assert err.reason == "bad_features"


@pytest.mark.parametrize("typ,value", [
    (gob.Map(gob.STRING, gob.UINT), {"Name": 1}),
    (gob.STRING, "features"),
    (gob.Slice(gob.STRING), ["PeerNameFlavour", "mac"]),
])
def test_features_of_wrong_gob_type(typ, value):
    err = violation(core(), PLAIN_HEADER + frame(gob.encode(typ, value)))
    assert err.reason == "bad_features"


def test_features_with_trailing_bytes_rejected():
    body = gob.encode(FEATURES_TYPE, A_FEATURES) + b"\x00"
    assert violation(core(), PLAIN_HEADER + frame(body)).reason == "bad_features"


def test_bad_features_content():
    features = {**A_FEATURES, "PeerNameFlavour": "hash"}
    assert violation(core(), PLAIN_HEADER + features_frame(features)).reason == "flavour_mismatch"


def test_events_before_violation_ride_on_error():
    c = core()
    c.receive_data(PLAIN_HEADER)
    err = violation(c, features_frame(A_FEATURES) + frame(b"\x04x") + b"\xff\xff\xff\xff")
    assert [type(e) for e in err.events] == [HandshakeComplete, MessageReceived]


def test_closed_core_refuses_input():
    c = core()
    violation(c, b"x")
    with pytest.raises(LocalProtocolError):
        c.receive_data(b"weave")


# --- incremental input -----------------------------------------------------------------


def test_one_byte_at_a_time_encrypted():
    a = MeshProtocol(True, b"pw", A_FEATURES, private_key=A_KEY)
    b = MeshProtocol(False, b"pw", B_FEATURES, private_key=B_KEY)
    to_b, to_a = a.initiate(), b.initiate()
    b.receive_data(to_b)
    to_a += b.data_to_send()
    events = [e for i in range(len(to_a)) for e in a.receive_data(to_a[i:i + 1])]
    assert [type(e) for e in events] == [HandshakeComplete]
    assert events[0].features == B_FEATURES
    b.receive_data(a.data_to_send())
    stream = b.send_message(6, b"broadcast") + b.send_message(0, b"")
    events = [e for i in range(len(stream)) for e in a.receive_data(stream[i:i + 1])]
    assert events == [MessageReceived(6, b"broadcast"), MessageReceived(0, b"")]


# --- captures --------------------------------------------------------------------------


def capture_streams(name, encrypted):
    cap = capture(name)
    messages = {}
    for m in cap["tcp_messages"]:
        messages.setdefault(m["stream"], []).append(m)
    for s in cap["tcp_streams"]:
        hs = s.get("handshake")
        if hs and hs["encryption_flag"] == int(encrypted):
            yield cap, s, messages[s["stream"]]


def reverse_name(stream):
    src, dst = stream.split("->")
    return f"{dst}->{src}"


def stream_bytes(s, messages):
    data = bytes.fromhex(s["handshake"]["raw_handshake_hex"])
    return data + b"".join(frame(bytes.fromhex(m["hex"])) for m in messages)


PLAIN_STREAMS = [(name, s["stream"]) for name in ("mesh-ipam", "sleeve")
                 for _, s, _ in capture_streams(name, encrypted=False)]


@pytest.mark.parametrize("name,stream", PLAIN_STREAMS)
def test_capture_plain_stream_replays(name, stream):
    cap, s, messages = next(x for x in capture_streams(name, False) if x[1]["stream"] == stream)
    data = stream_bytes(s, messages)
    assert len(data) == s["stream_bytes"]
    # The receiving end of this direction: it dialled iff this direction is the reply.
    outbound = s["role"].startswith("responder")
    reply = [m for m in cap["tcp_messages"] if m["stream"] == reverse_name(stream)]
    ours = reply[0]["features"]
    c = MeshProtocol(outbound, None, ours)
    assert c.initiate() == bytes.fromhex(s["handshake"]["raw_handshake_hex"])
    events = c.receive_data(data)
    theirs = messages[0]["features"]
    done = events[0]
    assert isinstance(done, HandshakeComplete)
    assert done.features == theirs
    assert done.conn_uid == int(ours["ConnID"]) ^ int(theirs["ConnID"])
    assert str(done.remote_name) == theirs["Name"] and done.remote_uid == int(theirs["UID"])
    assert done.remote_short_id == int(theirs["ShortID"])
    assert [(e.tag, e.payload.hex()) for e in events[1:]] == [
        (m["tag"], m["hex"][2:]) for m in messages[1:]]


def test_capture_plain_stream_one_byte_at_a_time():
    cap, s, messages = next(capture_streams("sleeve", False))
    data = stream_bytes(s, messages)
    c = core(outbound=not s["role"].startswith("initiator"))
    events = []
    for i in range(len(data)):
        events += c.receive_data(data[i:i + 1])
    assert len(events) == len(messages)
    assert [getattr(e, "tag", None) for e in events] == [m["tag"] for m in messages]


ENCRYPTED_STREAMS = [s["stream"] for _, s, _ in capture_streams("encrypted-handshake", True)]


@pytest.mark.parametrize("stream", ENCRYPTED_STREAMS)
def test_capture_encrypted_stream_intro_and_framing(stream):
    _, s, messages = next(x for x in capture_streams("encrypted-handshake", True)
                          if x[1]["stream"] == stream)
    hs = s["handshake"]
    assert len(stream_bytes(s, messages)) == s["stream_bytes"]
    c = core(outbound=s["role"].startswith("responder"), password=b"capture-pw", key=A_KEY)
    assert c.receive_data(bytes.fromhex(hs["raw_handshake_hex"])) == []
    assert c.remote_public_key.hex() == hs["public_key_hex"]
    assert c.state is ProtocolState.AWAIT_FEATURES
    ours = c.data_to_send()
    assert len(ours) == 4 + 16 + len(gob.encode(FEATURES_TYPE, B_FEATURES))
    first = frame(bytes.fromhex(messages[0]["hex"]))
    assert c.receive_data(first[:-1]) == []  # the frame is not complete before its last byte
    # We are not the peer that capture's keys belong to: its features cannot open.
    assert violation(c, first[-1:]).reason == "decrypt_failed"
    assert all(16 <= m["len"] == len(m["hex"]) // 2 <= MAX_TCP_MSG_SIZE for m in messages)


# --- fuzz ------------------------------------------------------------------------------


def feed_all(c: MeshProtocol, chunks: list[bytes]) -> None:
    try:
        for chunk in chunks:
            c.receive_data(chunk)
    except RemoteProtocolError as err:
        assert isinstance(err.reason, str) and c.state is ProtocolState.CLOSED


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=6), st.booleans(), st.booleans())
def test_random_bytes_only_raise_remote_errors(chunks, password, outbound):
    feed_all(core(outbound, b"pw" if password else None), chunks)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=6), st.booleans())
def test_random_frames_after_valid_intro(bodies, handshake_done):
    c = core()
    c.receive_data(PLAIN_HEADER + (features_frame(A_FEATURES) if handshake_done else b""))
    feed_all(c, [frame(b) for b in bodies])


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(st.text(max_size=12), st.text(max_size=20), max_size=8))
def test_random_feature_maps_only_raise_remote_errors(features):
    feed_all(core(), [PLAIN_HEADER + features_frame(features)])
