"""NaCl crypto of a mesh connection (mesh:protocol_crypto.go), sans-I/O.

Contracts:
- Session key = SHA-256(crypto_box_beforenm(remote_public, local_private) || password).
  Both ends derive the same key; the password never travels.
- Each TCP message is a NaCl secretbox (XSalsa20-Poly1305) of the plaintext under an
  explicit 24-byte nonce; the wire carries the 16-byte tag + ciphertext, never the nonce.
- The nonce scheme (shared with the sleeve) is `shared.weave.nonce`.
- Sequence numbers advance only after a message was sealed / opened successfully, as
  in mesh; a failed open leaves the counter where it was (the connection is dead anyway).
"""
from __future__ import annotations

import hashlib

import nacl.exceptions
from nacl.bindings import (
    crypto_box_beforenm,
    crypto_scalarmult_base,
    crypto_secretbox_easy,
    crypto_secretbox_open_easy,
)
from nacl.utils import random as random_bytes

from shared.errors import LocalProtocolError, RemoteProtocolError
from shared.weave.nonce import NONCE_SIZE, SECRETBOX_OVERHEAD, sleeve_nonce, tcp_nonce  # noqa: F401 (re-exported)

KEY_SIZE = 32
"""Bytes in a Curve25519 key and in a session key."""


class DecryptError(RemoteProtocolError):
    """A sealed message from the peer failed authentication (wrong key, tampering or
    a lost/reordered message). `reason` is "decrypt_failed"; `seq` the expected number."""

    def __init__(self, seq: int, length: int) -> None:
        super().__init__(
            f"unable to decrypt TCP msg (seq {seq}, {length} bytes)", seq=seq, length=length
        )
        self.reason = "decrypt_failed"
        self.seq = seq
        self.length = length


def generate_keypair() -> tuple[bytes, bytes]:
    """A fresh ephemeral Curve25519 pair `(public, private)`, one per connection."""
    private = random_bytes(KEY_SIZE)
    return crypto_scalarmult_base(private), private


def public_key_of(private: bytes) -> bytes:
    """The Curve25519 public key for `private` (lets tests pin a key pair)."""
    _check_key(private, "private key")
    return crypto_scalarmult_base(private)


def form_session_key(remote_public: bytes, local_private: bytes, password: bytes) -> bytes:
    """SHA-256 of the NaCl box shared key followed by the password (32 bytes).

    `remote_public` is remote input: a wrong length is a RemoteProtocolError.
    """
    if len(remote_public) != KEY_SIZE:
        raise RemoteProtocolError(
            f"public key must be {KEY_SIZE} bytes, got {len(remote_public)}",
            length=len(remote_public),
        )
    _check_key(local_private, "private key")
    shared = crypto_box_beforenm(remote_public, local_private)
    return hashlib.sha256(shared + password).digest()


def _check_key(key: bytes, what: str) -> None:
    if len(key) != KEY_SIZE:
        raise LocalProtocolError(f"{what} must be {KEY_SIZE} bytes, got {len(key)}")


class _TCPCryptoState:
    """Session key, nonce polarity and the next sequence number of one direction."""

    def __init__(self, session_key: bytes, sender_outbound: bool) -> None:
        _check_key(session_key, "session key")
        self.session_key = session_key
        self.sender_outbound = sender_outbound
        self.seq = 0
        """Sequence number the next message in this direction will use."""

    def _nonce(self) -> bytes:
        return tcp_nonce(self.sender_outbound, self.seq)


class Encryptor(_TCPCryptoState):
    """Seals the messages we send. `outbound` is whether *we* dialled."""

    def __init__(self, session_key: bytes, outbound: bool) -> None:
        super().__init__(session_key, sender_outbound=outbound)

    def encrypt(self, plain: bytes) -> bytes:
        """Tag + ciphertext of `plain` under the next nonce; advances the counter."""
        sealed = crypto_secretbox_easy(plain, self._nonce(), self.session_key)
        self.seq += 1
        return sealed


class Decryptor(_TCPCryptoState):
    """Opens the messages the peer sends. `outbound` is whether *we* dialled: the peer's
    messages carry the opposite polarity bit."""

    def __init__(self, session_key: bytes, outbound: bool) -> None:
        super().__init__(session_key, sender_outbound=not outbound)

    def decrypt(self, sealed: bytes) -> bytes:
        """Plaintext of the next message; DecryptError if it does not authenticate."""
        try:
            plain = crypto_secretbox_open_easy(sealed, self._nonce(), self.session_key)
        except nacl.exceptions.CryptoError as exc:  # also covers input shorter than a tag
            raise DecryptError(self.seq, len(sealed)) from exc
        self.seq += 1
        return plain


def session_ciphers(session_key: bytes, outbound: bool) -> tuple[Encryptor, Decryptor]:
    """The (send, receive) pair for one end of a connection."""
    return Encryptor(session_key, outbound), Decryptor(session_key, outbound)
