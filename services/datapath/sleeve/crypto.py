"""Encrypted sleeve packets (weave:router/frame_crypto.go), sans-I/O.

Wire format of one encrypted UDP payload:

    [6-byte sender name, clear][8-byte BE seqNoAndDF, clear][secretbox(frames)]

- `frames` is exactly the plaintext body of §4 (concatenated frame headers + frames);
  the secretbox is NaCl XSalsa20-Poly1305: 16-byte tag + ciphertext, no nonce.
- seqNoAndDF: bit 63 = DF channel, low 63 bits = that channel's packet counter. The
  DF and non-DF packers count independently from 0, and the DF bit keeps their
  nonces apart. The counter advances on every sealed packet, sent or not (the kernel
  refusing the PMTU probe still uses up a DF number, as the captures show).
- Nonce (protocol_crypto.sleeve_nonce): byte 0 bit 7 = the *sender* dialled the TCP
  connection, bit 6 = 0 (UDP), bytes 16..23 = seqNoAndDF. A receiver opens with the
  opposite polarity to its own `outbound`.
- Replay protection, one window per DF class: window = seq >> 20, offset = seq & (2^20-1);
  bitsets for the current and the previous window. A packet of an older window is
  dropped, of the previous window is checked against the previous set, of the next
  window slides by one, of a later window resets both. The window is consulted and
  updated only after the packet authenticated, so forged packets cannot move it.
  Replays are dropped silently (a duplicate is not an error in UDP).
"""
from __future__ import annotations

import nacl.exceptions
from nacl.bindings import crypto_secretbox_easy, crypto_secretbox_open

from services.datapath.sleeve.frame import FRAME_OVERHEAD, NAME_SIZE, frame_header, name_bytes
from shared.weave.nonce import SECRETBOX_OVERHEAD, sleeve_nonce
from shared.errors import LocalProtocolError, RemoteProtocolError

SEQ_SIZE = 8
DF_BIT = 1 << 63
SEQ_MASK = DF_BIT - 1
WINDOW_BITS = 20
"""log2 of the replay window size (weave WindowSize)."""
_OFFSET_MASK = (1 << WINDOW_BITS) - 1
_BITSET_BYTES = (1 << WINDOW_BITS) // 8
ENCRYPTED_PACKET_OVERHEAD = NAME_SIZE + SEQ_SIZE + SECRETBOX_OVERHEAD
"""Bytes an encrypted packet adds besides the frames: 6 + 8 + 16 = 30."""


class DecryptionError(RemoteProtocolError):
    """An encrypted sleeve packet that is too short or does not authenticate.
    `reason` is the drop-counter key; `df` and `seq` come from the clear header
    (None when it was too short to have one)."""

    def __init__(self, reason: str, detail: str, df: bool | None, seq: int | None) -> None:
        super().__init__(detail, code=reason, df=df, seq=seq)
        self.reason = reason
        self.df = df
        self.seq = seq


def parse_clear_header(body: bytes | memoryview) -> tuple[bool, int]:
    """(df, seq) from the first 8 bytes after the sender name."""
    if len(body) < SEQ_SIZE:
        raise DecryptionError(
            "short_encrypted_packet",
            f"encrypted UDP packet too short; expected length >= 8, got {len(body)}",
            None,
            None,
        )
    word = int.from_bytes(body[:SEQ_SIZE], "big")
    return bool(word & DF_BIT), word & SEQ_MASK


def _nonce_prefix(sender_outbound: bool) -> bytes:
    """First 16 nonce bytes for a sender polarity; the last 8 are seqNoAndDF."""
    return sleeve_nonce(sender_outbound, 0)[:16]


class NaClPacker:
    """Batches frames into one encrypted sleeve packet (weave NaClEncryptor).

    A frame.Packer, like frame.PlainPacker: `total_len()` is the UDP payload length the
    packet would have if flushed now; `flush()` seals, returns it, and advances the
    counter. `outbound` is whether *we* dialled the mesh connection.
    """

    packet_overhead = ENCRYPTED_PACKET_OVERHEAD
    frame_overhead = FRAME_OVERHEAD

    def __init__(self, sender: int, session_key: bytes, outbound: bool, df: bool, first_seq: int = 0) -> None:
        """`first_seq`: 0 for a new connection (as Weave); a datapath that takes over a
        connection from its previous process passes a value above any that process can
        have used, since the session key is the same and a nonce must never repeat."""
        if len(session_key) != 32:
            raise LocalProtocolError("session key must be 32 bytes", length=len(session_key))
        self._prefix = name_bytes(sender)
        self._key = session_key
        self._nonce_prefix = _nonce_prefix(outbound)
        self._df_bit = DF_BIT if df else 0
        self._plain = bytearray()
        if not 0 <= first_seq < DF_BIT:
            raise LocalProtocolError("first sequence number out of range", first_seq=first_seq)
        self.seq = first_seq
        """Counter the next sealed packet will carry (without the DF bit)."""
        self.count = 0

    def total_len(self) -> int:
        return ENCRYPTED_PACKET_OVERHEAD + len(self._plain)

    def append_frame(self, src: int, dst: int, frame: bytes | memoryview) -> None:
        """Copies the frame in: the caller may reuse its buffer at once."""
        self._plain += frame_header(src, dst, len(frame))
        self._plain += frame
        self.count += 1

    def flush(self) -> bytes:
        plain = bytes(self._plain)
        self._plain.clear()
        self.count = 0
        return self.seal(plain)

    def seal(self, plain: bytes) -> bytes:
        """A whole packet carrying `plain` as its body, under the next sequence number."""
        word = (self.seq | self._df_bit).to_bytes(SEQ_SIZE, "big")
        self.seq += 1
        sealed = crypto_secretbox_easy(plain, self._nonce_prefix + word, self._key)
        return self._prefix + word + sealed


class ReplayWindow:
    """Seen sequence numbers of one DF class: two 2^20-bit sets (weave advanceState)."""

    def __init__(self) -> None:
        self.current_window = 0
        self._current = bytearray(_BITSET_BYTES)
        self._previous: bytearray | None = None
        """None until the first slide: nothing can belong to window -1 before then."""

    def accept(self, seq: int) -> bool:
        """Record `seq`; False if it was seen before or is too old to tell."""
        bits = self._bits_for(seq >> WINDOW_BITS)
        if bits is None:
            return False
        offset = seq & _OFFSET_MASK
        index, mask = offset >> 3, 1 << (offset & 7)
        if bits[index] & mask:
            return False
        bits[index] |= mask
        return True

    def _bits_for(self, window: int) -> bytearray | None:
        delta = window - self.current_window
        if delta == 0:
            return self._current
        if delta == -1:
            return self._previous
        if delta < -1:
            return None
        self.current_window = window
        if delta == 1:
            self._previous = self._current
        else:
            self._previous = bytearray(_BITSET_BYTES)
        self._current = bytearray(_BITSET_BYTES)
        return self._current


class NaClDecryptor:
    """Opens the encrypted packets of one remote peer (weave NaClDecryptor).

    `outbound` is whether *we* dialled; the peer's packets carry the other polarity.
    """

    def __init__(self, session_key: bytes, outbound: bool) -> None:
        if len(session_key) != 32:
            raise LocalProtocolError("session key must be 32 bytes", length=len(session_key))
        self._key = session_key
        self._nonce_prefix = _nonce_prefix(not outbound)
        self.windows = {False: ReplayWindow(), True: ReplayWindow()}
        """Replay window per DF class, keyed by the DF bit."""

    def open(self, body: bytes | memoryview) -> bytes | None:
        """Plaintext frames of `body` (the packet after the sender name), or None for
        a replayed or too old packet. DecryptionError if it does not authenticate."""
        df, seq = parse_clear_header(body)
        word = bytes(body[:SEQ_SIZE])
        try:
            plain = crypto_secretbox_open(bytes(body[SEQ_SIZE:]), self._nonce_prefix + word, self._key)
        except nacl.exceptions.CryptoError as exc:  # also: shorter than the 16-byte tag
            raise DecryptionError(
                "decrypt_failed", f"UDP packet decryption failed (df={df}, seq={seq})", df, seq
            ) from exc
        if not self.windows[df].accept(seq):
            return None
        return plain
