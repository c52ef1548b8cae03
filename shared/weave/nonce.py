"""The NaCl nonce scheme shared by a mesh connection (TCP messages) and the sleeve (UDP
packets) under one session key (mesh:protocol_crypto.go, weave:router/crypto.go).

Nonce layout, 24 bytes, all zero except:
    byte 0 bit 7  1 if the *sender* dialled the TCP connection (outbound),
    byte 0 bit 6  1 for TCP messages, 0 for sleeve UDP packets (so the two can share
                  the session key without ever reusing a nonce),
    bytes 16..23  big-endian sequence number (TCP: per-direction message counter
                  starting at 0; sleeve: `seqNoAndDF`, bit 63 = DF channel).
A receiver uses the opposite polarity bit to its own `outbound`.
"""
from __future__ import annotations

from shared.errors import LocalProtocolError

NONCE_SIZE = 24
SECRETBOX_OVERHEAD = 16
"""Poly1305 tag prepended to every sealed message: wire length = plaintext + 16."""

_OUTBOUND_BIT = 0x80
_TCP_BIT = 0x40
_SEQ_LIMIT = 1 << 64


def tcp_nonce(sender_outbound: bool, seq: int) -> bytes:
    """Nonce of TCP message number `seq` sent by the side whose `outbound` is given."""
    return _nonce(_TCP_BIT | (_OUTBOUND_BIT if sender_outbound else 0), seq)


def sleeve_nonce(sender_outbound: bool, seq_no_and_df: int) -> bytes:
    """Nonce of a sleeve UDP packet; `seq_no_and_df` is the 8-byte word sent in clear
    before the secretbox (bit 63 = DF channel, low 63 bits = that channel's counter)."""
    return _nonce(_OUTBOUND_BIT if sender_outbound else 0, seq_no_and_df)


def _nonce(byte0: int, seq: int) -> bytes:
    if not 0 <= seq < _SEQ_LIMIT:
        raise LocalProtocolError(f"sequence number {seq} does not fit in 64 bits", seq=seq)
    return bytes([byte0]) + bytes(15) + seq.to_bytes(8, "big")
