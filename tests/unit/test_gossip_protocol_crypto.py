"""Mesh connection crypto: session key, nonces, secretbox framing (spec §1, §4)."""
from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nacl.bindings import crypto_secretbox

from services.gossip.protocol_crypto import (
    SECRETBOX_OVERHEAD,
    DecryptError,
    Decryptor,
    Encryptor,
    form_session_key,
    generate_keypair,
    public_key_of,
    session_ciphers,
    sleeve_nonce,
    tcp_nonce,
)
from shared.errors import LocalProtocolError, RemoteProtocolError

# NaCl's published box/secretbox test vectors (tests/box.c, tests/secretbox.c in the
# NaCl distribution; the X25519 keys are RFC 7748's Alice and Bob).
ALICE_SK = bytes.fromhex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PK = bytes.fromhex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
BOB_SK = bytes.fromhex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
BOB_PK = bytes.fromhex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
BOX_BEFORENM = bytes.fromhex("1b27556473e985d462cd51197a9a46c76009549eac6474f206c4ee0844f68389")
SECRETBOX_NONCE = bytes.fromhex("69696ee955b62b73cd62bda875fc73d68219e0036b7a0b37")
SECRETBOX_PLAIN = bytes.fromhex(
    "be075fc53c81f2d5cf141316ebeb0c7b5228c52a4c62cbd44b66849b64244ffce5ecbaaf33bd751a1ac728"
    "d45e6c61296cdc3c01233561f41db66cce314adb310e3be8250c46f06dceea3a7fa1348057e2f6556ad6b1"
    "318a024a838f21af1fde048977eb48f59ffd4924ca1c60902e52f0a089bc76897040e082f937763848645e0705"
)
SECRETBOX_SEALED = bytes.fromhex(
    "f3ffc7703f9400e52a7dfb4b3d3305d98e993b9f48681273c29650ba32fc76ce48332ea7164d96a4476fb8"
    "c531a1186ac0dfc17c98dce87b4da7f011ec48c97271d2c20f9b928fe2270d6fb863d51738b48eeee314a7"
    "cc8ab932164548e526ae90224368517acfeabd6bb3732bc0e9da99832b61ca01b6de56244a9e88d5f9b379"
    "73f622a43d14a6599b1f654cb45a74e355a5"
)


def test_public_key_of_matches_rfc7748():
    assert public_key_of(ALICE_SK) == ALICE_PK
    assert public_key_of(BOB_SK) == BOB_PK


@pytest.mark.parametrize("password", [b"", b"capture-pw", b"\x00\xff" * 40])
def test_session_key_is_sha256_of_beforenm_and_password(password):
    expected = hashlib.sha256(BOX_BEFORENM + password).digest()
    assert form_session_key(BOB_PK, ALICE_SK, password) == expected
    assert form_session_key(ALICE_PK, BOB_SK, password) == expected


def test_session_key_rejects_short_remote_key_as_remote_error():
    with pytest.raises(RemoteProtocolError):
        form_session_key(BOB_PK[:31], ALICE_SK, b"pw")


def test_session_key_rejects_bad_private_key_as_local_error():
    with pytest.raises(LocalProtocolError):
        form_session_key(BOB_PK, ALICE_SK[:5], b"pw")


def test_generated_keypairs_agree():
    a_pub, a_priv = generate_keypair()
    b_pub, b_priv = generate_keypair()
    assert len(a_pub) == len(a_priv) == 32
    assert a_pub != b_pub
    assert public_key_of(a_priv) == a_pub
    assert form_session_key(b_pub, a_priv, b"x") == form_session_key(a_pub, b_priv, b"x")


@pytest.mark.parametrize(
    "outbound,seq,hex_nonce",
    [
        (True, 0, "c0" + "00" * 23),
        (False, 0, "40" + "00" * 23),
        (True, 1, "c0" + "00" * 15 + "0000000000000001"),
        (False, 258, "40" + "00" * 15 + "0000000000000102"),
        (True, 2**64 - 1, "c0" + "00" * 15 + "ffffffffffffffff"),
    ],
)
def test_tcp_nonce_golden(outbound, seq, hex_nonce):
    assert tcp_nonce(outbound, seq).hex() == hex_nonce


@pytest.mark.parametrize(
    "outbound,word,hex_nonce",
    [
        (True, 0, "80" + "00" * 23),
        (False, 0, "00" * 24),
        (False, (1 << 63) | 3, "00" * 16 + "8000000000000003"),
        (True, 7, "80" + "00" * 15 + "0000000000000007"),
    ],
)
def test_sleeve_nonce_golden(outbound, word, hex_nonce):
    assert sleeve_nonce(outbound, word).hex() == hex_nonce


@pytest.mark.parametrize("seq", [-1, 2**64])
def test_nonce_sequence_out_of_range(seq):
    with pytest.raises(LocalProtocolError):
        tcp_nonce(True, seq)


def test_secretbox_matches_nacl_vector_and_drops_nonce_prefix():
    assert crypto_secretbox(SECRETBOX_PLAIN, SECRETBOX_NONCE, BOX_BEFORENM) == SECRETBOX_SEALED
    enc = Encryptor(BOX_BEFORENM, outbound=True)
    sealed = enc.encrypt(SECRETBOX_PLAIN)
    assert len(sealed) == len(SECRETBOX_PLAIN) + SECRETBOX_OVERHEAD
    assert sealed == crypto_secretbox(
        SECRETBOX_PLAIN, bytes.fromhex("c0" + "00" * 23), BOX_BEFORENM
    )


def test_encryptor_uses_successive_nonces():
    key = bytes(range(32))
    enc = Encryptor(key, outbound=False)
    for seq in range(3):
        assert enc.seq == seq
        assert enc.encrypt(b"msg") == crypto_secretbox(b"msg", tcp_nonce(False, seq), key)
    assert enc.seq == 3


def test_pair_round_trips_both_ways_with_opposite_polarity():
    key = bytes(range(32))
    out_enc, out_dec = session_ciphers(key, outbound=True)
    in_enc, in_dec = session_ciphers(key, outbound=False)
    for i in range(4):
        assert in_dec.decrypt(out_enc.encrypt(b"a%d" % i)) == b"a%d" % i
        assert out_dec.decrypt(in_enc.encrypt(b"b%d" % i)) == b"b%d" % i
    assert (out_enc.seq, in_dec.seq, in_enc.seq, out_dec.seq) == (4, 4, 4, 4)


def test_same_polarity_cannot_decrypt():
    key = bytes(32)
    sealed = Encryptor(key, outbound=True).encrypt(b"hello")
    with pytest.raises(DecryptError) as info:
        Decryptor(key, outbound=True).decrypt(sealed)
    assert info.value.reason == "decrypt_failed"
    assert isinstance(info.value, RemoteProtocolError)


def test_out_of_order_message_fails_and_counter_stays():
    key = bytes(32)
    enc, dec = Encryptor(key, True), Decryptor(key, False)
    enc.encrypt(b"first, lost")
    second = enc.encrypt(b"second")
    with pytest.raises(DecryptError) as info:
        dec.decrypt(second)
    assert info.value.seq == 0
    assert dec.seq == 0


def test_wrong_key_fails():
    sealed = Encryptor(bytes(32), True).encrypt(b"x")
    with pytest.raises(DecryptError):
        Decryptor(b"\x01" * 32, False).decrypt(sealed)


@pytest.mark.parametrize("length", [0, 1, 15, 16, 17])
def test_short_or_forged_input_is_decrypt_error(length):
    with pytest.raises(DecryptError) as info:
        Decryptor(bytes(32), False).decrypt(b"\x00" * length)
    assert info.value.length == length


def test_empty_plaintext_seals_to_tag_only():
    key = bytes(32)
    sealed = Encryptor(key, True).encrypt(b"")
    assert len(sealed) == SECRETBOX_OVERHEAD
    assert Decryptor(key, False).decrypt(sealed) == b""


def test_cipher_rejects_bad_key_length():
    with pytest.raises(LocalProtocolError):
        Encryptor(bytes(31), True)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=8), st.booleans())
def test_round_trip_property(messages, outbound):
    key = hashlib.sha256(b"k").digest()
    enc, dec = Encryptor(key, outbound), Decryptor(key, not outbound)
    assert [dec.decrypt(enc.encrypt(m)) for m in messages] == messages


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_decrypt_error(data):
    with pytest.raises(DecryptError):
        Decryptor(bytes(32), False).decrypt(data)
