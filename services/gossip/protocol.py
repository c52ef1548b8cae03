"""The mesh TCP connection protocol, version 2 (mesh:protocol.go, mesh:connection.go).

A sans-I/O core for one TCP connection: bytes in, events and bytes out. The shell owns
the socket and the timers (HEADER_TIMEOUT, READ_TIMEOUT, TCP_HEARTBEAT below).

Wire, per direction (spec §1):
    "weave" MinVersion MaxVersion          7 bytes, written at once by both sides
    flag [public key]                      0, or 1 + 32-byte Curve25519 key
    len(4, BE) body                        repeated; body <= MAX_TCP_MSG_SIZE on the wire
The first body is the gob map[string]string of features; every later plaintext body is
one tag byte + payload. With a password every body is a secretbox (protocol_crypto).

States and what the next bytes from the peer mean (anything else -> RemoteProtocolError):
    AWAIT_HEADER      7-byte header     -> AWAIT_FLAG (negotiated version must be 2)
    AWAIT_FLAG        flag 0            -> AWAIT_FEATURES, our features queued
                      flag 1            -> AWAIT_PUBLIC_KEY
    AWAIT_PUBLIC_KEY  32-byte key       -> AWAIT_FEATURES, session key, features queued
    AWAIT_FEATURES    one frame         -> OPEN, emits HandshakeComplete
    OPEN              one frame         -> OPEN, emits MessageReceived (empty ignored)
    CLOSED            (after any error: the connection is over, nothing is accepted)
"""
from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from shared.weave.peer_name import PeerName, PeerUID, ShortID
from services.gossip.protocol_crypto import (
    KEY_SIZE,
    SECRETBOX_OVERHEAD,
    Decryptor,
    Encryptor,
    form_session_key,
    generate_keypair,
    public_key_of,
)
from shared import gob
from shared.config import GossipSettings
from shared.errors import LocalProtocolError, RemoteProtocolError
from shared.weave.protocol_tags import ProtocolTag

PROTOCOL_MAGIC = b"weave"
PROTOCOL_MIN_VERSION = 1
PROTOCOL_MAX_VERSION = 2
SUPPORTED_VERSION = 2
"""Only version 2 is implemented; version 1 (gob stream framing) is pre-2.0 legacy."""
HEADER_LEN = len(PROTOCOL_MAGIC) + 2

HEADER_TIMEOUT = 10.0
"""Seconds, from connect, for the peer's header to arrive (mesh HeaderTimeout)."""
TCP_HEARTBEAT = GossipSettings().heartbeat_s
"""Seconds between our heartbeat messages by default (production's, mesh TCPHeartbeat);
a connection takes its own (`MeshProtocol(heartbeat=...)`)."""
READ_TIMEOUT = 2 * TCP_HEARTBEAT
"""Seconds of read silence after the header before the connection is dropped (twice
the heartbeat)."""
MAX_TCP_MSG_SIZE = 10 * 1024 * 1024
"""Cap on a frame body as it is on the wire (sealed size when encrypted), both ways."""

PEER_NAME_FLAVOUR = "mac"
REQUIRED_FEATURES = ("PeerNameFlavour", "Name", "NickName", "UID", "ConnID")
"""Checked in this order, so the first missing one is reported as mesh would."""

_FEATURES_TYPE = gob.Map(gob.STRING, gob.STRING)
_UINT_TEXT = re.compile(r"[0-9]+")
_GO_BOOLS = {**dict.fromkeys(("1", "t", "T", "TRUE", "true", "True"), True),
             **dict.fromkeys(("0", "f", "F", "FALSE", "false", "False"), False)}
"""Exactly what Go's strconv.ParseBool accepts."""


class ProtocolState(enum.Enum):
    AWAIT_HEADER = "await-header"
    AWAIT_FLAG = "await-flag"
    AWAIT_PUBLIC_KEY = "await-public-key"
    AWAIT_FEATURES = "await-features"
    OPEN = "open"
    CLOSED = "closed"


class MeshProtocolError(RemoteProtocolError):
    """The peer broke the connection protocol. `reason` is a short stable code
    (e.g. "bad_magic", "expected_crypto", "missing_feature"); `events` holds what the
    same receive_data call decoded before the violation, for the shell to act on."""

    def __init__(self, reason: str, message: str, **attrs: object) -> None:
        super().__init__(message, reason=reason, **attrs)
        self.__dict__.update(attrs, reason=reason, events=[])


@dataclass(frozen=True)
class HandshakeComplete:
    """The peer's features arrived and passed mesh's checks; the connection is open."""

    features: dict[str, str]
    version: int
    encrypted: bool
    session_key: bytes | None
    """32 bytes when a password is set (the overlay may reuse it), else None."""
    conn_uid: int
    """Our ConnID XOR theirs: identical on both ends (duplicate tie-breaks, heartbeats)."""
    remote_name: PeerName
    remote_uid: PeerUID
    remote_nickname: str
    remote_short_id: ShortID | None
    """None when the peer sent no ShortID (it cannot use fastdp)."""
    trusted_by_remote: bool
    """The peer's `Trusted` feature: does it trust us (false when absent)."""


@dataclass(frozen=True)
class MessageReceived:
    """One non-empty message. `tag` may be outside ProtocolTag (mesh logs and ignores
    those); heartbeats arrive as tag 0 so the shell can re-arm its read timer."""

    tag: int
    payload: bytes


Event = HandshakeComplete | MessageReceived


def make_features(name: PeerName, nickname: str, uid: int, conn_id: int,
                  short_id: int | None = None, trusted: bool | None = None,
                  overlays: Sequence[str] | str | None = None) -> dict[str, str]:
    """Our features map as mesh's makeFeatures + overlay AddFeaturesTo write it.
    `overlays` in preference order; leave it None to offer only "compat" sleeve."""
    features = {"PeerNameFlavour": PEER_NAME_FLAVOUR, "Name": str(PeerName(name)),
                "NickName": nickname, "UID": str(int(uid)), "ConnID": str(int(conn_id))}
    if short_id is not None:
        features["ShortID"] = str(int(ShortID(short_id)))
    if trusted is not None:
        features["Trusted"] = "true" if trusted else "false"
    if overlays is not None:
        features["Overlays"] = overlays if isinstance(overlays, str) else " ".join(overlays)
    return features


class MeshProtocol:
    """One end of one mesh TCP connection, from `initiate()` until an error.

    `outbound`: we dialled. `password`: None for plaintext, else the mesh password
    (may be empty bytes, which still means "encrypted", as in mesh). `private_key`
    pins the ephemeral key for tests; normally a fresh one is drawn per connection.
    """

    def __init__(self, outbound: bool, password: bytes | None, features: Mapping[str, str],
                 min_version: int = PROTOCOL_MIN_VERSION,
                 max_version: int = PROTOCOL_MAX_VERSION,
                 private_key: bytes | None = None, heartbeat: float = TCP_HEARTBEAT) -> None:
        if not 1 <= min_version <= max_version == SUPPORTED_VERSION:
            raise LocalProtocolError(
                f"version range [{min_version},{max_version}] must end at {SUPPORTED_VERSION}")
        self.outbound = outbound
        self.password = password
        self.heartbeat = heartbeat
        """Seconds between our heartbeats; the read timeout after the header is twice it."""
        self.min_version, self.max_version = min_version, max_version
        self.local_conn_id = _local_conn_id(features)
        self._features_gob = _encode_features(features)
        self._private_key: bytes | None = None
        if password is not None:
            self._private_key = private_key or generate_keypair()[1]
        self.remote_public_key: bytes | None = None
        self.session_key: bytes | None = None
        self.version: int | None = None
        """Negotiated protocol version, once the peer's header is in."""
        self._encryptor: Encryptor | None = None
        self._decryptor: Decryptor | None = None
        self.state = ProtocolState.AWAIT_HEADER
        self._initiated = False
        self._inbox = _ReceiveBuffer()
        self._outbox = bytearray()

    @property
    def encrypted(self) -> bool:
        return self.password is not None

    @property
    def read_timeout(self) -> float:
        """Seconds the shell allows before the next bytes must arrive: the header
        deadline (armed once, at connect) until the header is in, then twice the
        heartbeat (READ_TIMEOUT by default), re-armed after each event."""
        return HEADER_TIMEOUT if self.state is ProtocolState.AWAIT_HEADER else 2 * self.heartbeat

    def initiate(self) -> bytes:
        """Header, flag and public key: write them at once, without waiting for the
        peer (both sides write first, then read). Call exactly once, before feeding."""
        if self._initiated:
            raise LocalProtocolError("initiate() called twice")
        self._initiated = True
        header = PROTOCOL_MAGIC + bytes([self.min_version, self.max_version])
        if self._private_key is None:
            return header + b"\x00"
        return header + b"\x01" + public_key_of(self._private_key)

    def data_to_send(self) -> bytes:
        """Bytes the core wants written (our features once the peer's flag and key are
        known); empty if none. Drains them: each byte is returned exactly once."""
        out = bytes(self._outbox)
        self._outbox.clear()
        return out

    def send_message(self, tag: int, payload: bytes) -> bytes:
        """The framed (and sealed) message to write. Only once OPEN. Any bytes still
        pending from data_to_send() come first, so wire order always holds."""
        if self.state is not ProtocolState.OPEN:
            raise LocalProtocolError(f"cannot send in state {self.state.value}", reason="not_open")
        if not 0 <= tag <= 0xFF:
            raise LocalProtocolError(f"tag {tag} is not a byte", reason="bad_tag")
        self._queue_frame(bytes([tag]) + payload)
        return self.data_to_send()

    def receive_data(self, data: bytes) -> list[Event]:
        """Consume bytes from the socket (any split); return the events they complete.

        Raises RemoteProtocolError (MeshProtocolError, or DecryptError; both carry
        `reason`) for any violation; the core is then CLOSED and the shell should drop
        the connection. Events decoded earlier in the same call ride on `err.events`.
        """
        if not self._initiated or self.state is ProtocolState.CLOSED:
            raise LocalProtocolError(f"cannot receive in state {self.state.value}"
                                     + ("" if self._initiated else " before initiate()"))
        self._inbox.feed(data)
        events: list[Event] = []
        try:
            while self._STEPS[self.state](self, events):
                pass
        except RemoteProtocolError as err:
            self.state = ProtocolState.CLOSED
            err.events = events
            raise
        finally:
            self._inbox.compact()
        return events

    # Each step consumes one unit of input if it is complete and returns whether it
    # did, so receive_data loops until the buffer holds only a partial unit.

    def _on_header(self, events: list[Event]) -> bool:
        _check_magic_prefix(self._inbox.peek(len(PROTOCOL_MAGIC)))
        header = self._inbox.take(HEADER_LEN)
        if header is None:
            return False
        self.version = _negotiate(self.min_version, self.max_version, header[5], header[6])
        self.state = ProtocolState.AWAIT_FLAG
        return True

    def _on_flag(self, events: list[Event]) -> bool:
        flag = self._inbox.take(1)
        if flag is None:
            return False
        if flag[0] > 1:
            raise MeshProtocolError("bad_encryption_flag", f"Bad encryption flag {flag[0]}",
                                    flag=flag[0])
        _check_crypto_agreement(self.encrypted, remote_encrypted=flag[0] == 1)
        if self.encrypted:
            self.state = ProtocolState.AWAIT_PUBLIC_KEY
        else:
            self._queue_features()
        return True

    def _on_public_key(self, events: list[Event]) -> bool:
        key = self._inbox.take(KEY_SIZE)
        if key is None:
            return False
        self.remote_public_key = key
        assert self._private_key is not None and self.password is not None
        self.session_key = form_session_key(key, self._private_key, self.password)
        self._encryptor = Encryptor(self.session_key, self.outbound)
        self._decryptor = Decryptor(self.session_key, self.outbound)
        self._queue_features()
        return True

    def _on_features(self, events: list[Event]) -> bool:
        body = self._next_body()
        if body is None:
            return False
        features = _decode_features(body)
        events.append(self._handshake_complete(features))
        self.state = ProtocolState.OPEN
        return True

    def _on_message(self, events: list[Event]) -> bool:
        body = self._next_body()
        if body is None:
            return False
        if body:  # mesh ignores blank messages
            events.append(MessageReceived(body[0], body[1:]))
        return True

    _STEPS: dict[ProtocolState, Callable[["MeshProtocol", list[Event]], bool]] = {
        ProtocolState.AWAIT_HEADER: _on_header,
        ProtocolState.AWAIT_FLAG: _on_flag,
        ProtocolState.AWAIT_PUBLIC_KEY: _on_public_key,
        ProtocolState.AWAIT_FEATURES: _on_features,
        ProtocolState.OPEN: _on_message,
    }

    def _next_body(self) -> bytes | None:
        """The next frame body, opened if encrypted; None until it is complete."""
        prefix = self._inbox.peek(4)
        if len(prefix) < 4:
            return None
        length = int.from_bytes(prefix, "big")
        if length > MAX_TCP_MSG_SIZE:
            raise MeshProtocolError(
                "frame_too_large",
                f"incoming message exceeds maximum size: {length} > {MAX_TCP_MSG_SIZE}",
                length=length)
        if self._inbox.available() < 4 + length:
            return None
        self._inbox.take(4)
        body = self._inbox.take(length) or b""
        return self._decryptor.decrypt(body) if self._decryptor else body

    def _queue_features(self) -> None:
        self._queue_frame(self._features_gob)
        self.state = ProtocolState.AWAIT_FEATURES

    def _queue_frame(self, body: bytes) -> None:
        wire_len = len(body) + (SECRETBOX_OVERHEAD if self._encryptor else 0)
        if wire_len > MAX_TCP_MSG_SIZE:
            raise LocalProtocolError(
                f"outgoing message exceeds maximum size: {wire_len} > {MAX_TCP_MSG_SIZE}",
                reason="frame_too_large", length=wire_len)
        if self._encryptor:
            body = self._encryptor.encrypt(body)
        self._outbox += len(body).to_bytes(4, "big")
        self._outbox += body

    def _handshake_complete(self, features: dict[str, str]) -> HandshakeComplete:
        remote = parse_features(features)
        return HandshakeComplete(
            features=features, version=self.version, encrypted=self.encrypted,
            session_key=self.session_key, conn_uid=self.local_conn_id ^ remote.conn_id,
            remote_name=remote.name, remote_uid=remote.uid, remote_nickname=remote.nickname,
            remote_short_id=remote.short_id, trusted_by_remote=remote.trusted)


@dataclass(frozen=True)
class RemoteFeatures:
    """The typed content of a peer's features map (mesh parseFeatures)."""

    name: PeerName
    nickname: str
    uid: PeerUID
    conn_id: int
    short_id: ShortID | None
    trusted: bool


def parse_features(features: Mapping[str, str]) -> RemoteFeatures:
    """Validate a peer's features as mesh does; MeshProtocolError on the first fault."""
    for key in REQUIRED_FEATURES:
        if key not in features:
            raise MeshProtocolError("missing_feature", f"Field {key} is missing", feature=key)
    flavour = features["PeerNameFlavour"]
    if flavour != PEER_NAME_FLAVOUR:
        raise MeshProtocolError(
            "flavour_mismatch",
            f"Peer name flavour mismatch (ours: '{PEER_NAME_FLAVOUR}', theirs: '{flavour}')")
    short_id = features.get("ShortID")
    return RemoteFeatures(
        name=_parse_name(features["Name"]),
        nickname=features["NickName"],
        uid=PeerUID(_parse_uint(features["UID"], 64, "bad_uid")),
        conn_id=_parse_uint(features["ConnID"], 64, "bad_conn_id"),
        short_id=None if short_id is None else ShortID(_parse_uint(short_id, 12, "bad_short_id")),
        trusted=_parse_trusted(features.get("Trusted")))


def _parse_name(text: str) -> PeerName:
    try:
        return PeerName.parse(text)
    except (ValueError, LocalProtocolError) as exc:
        raise MeshProtocolError("bad_name", f"invalid peer name {text!r}") from exc


def _parse_uint(text: str, bits: int, reason: str) -> int:
    value = _go_parse_uint(text, bits)
    if value is None:
        raise MeshProtocolError(reason, f"invalid {bits}-bit unsigned integer {text[:40]!r}")
    return value


def _go_parse_uint(text: object, bits: int) -> int | None:
    """Go's strconv.ParseUint(text, 10, bits), None on error: ASCII digits only (no sign,
    spaces or underscores), leading zeros allowed. Long digit runs are refused before
    int() sees them (Python caps int() at 4300 digits)."""
    if not isinstance(text, str) or not _UINT_TEXT.fullmatch(text):
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > 20 or int(digits) >> bits:
        return None
    return int(digits)


def _parse_trusted(text: str | None) -> bool:
    if text is None:
        return False
    if text not in _GO_BOOLS:
        raise MeshProtocolError("bad_trusted", f"invalid boolean {text!r} for Trusted")
    return _GO_BOOLS[text]


def _check_magic_prefix(prefix: bytes) -> None:
    """Fail on the first wrong byte instead of waiting for all seven."""
    if prefix != PROTOCOL_MAGIC[:len(prefix)]:
        raise MeshProtocolError(
            "bad_magic", f"remote protocol header not recognised: {prefix!r}", header=prefix)


def _negotiate(our_min: int, our_max: int, their_min: int, their_max: int) -> int:
    if max(our_min, their_min) > min(our_max, their_max):
        raise MeshProtocolError(
            "version_mismatch",
            f"remote version range [{their_min},{their_max}] is incompatible with ours "
            f"[{our_min},{our_max}]", remote_min=their_min, remote_max=their_max)
    version = min(our_max, their_max)
    if version != SUPPORTED_VERSION:
        raise MeshProtocolError("unsupported_version", "unsupported protocol version "
                                f"{version}", version=version)
    return version


def _check_crypto_agreement(local_encrypted: bool, remote_encrypted: bool) -> None:
    # Messages as mesh words them (typo included) so logs match Go peers'.
    if local_encrypted and not remote_encrypted:
        raise MeshProtocolError(
            "expected_crypto", "password specified, but peer requested an unencrypted connection")
    if remote_encrypted and not local_encrypted:
        raise MeshProtocolError(
            "expected_no_crypto",
            "no password specificed, but peer requested an encrypted connection")


def _decode_features(body: bytes) -> dict[str, str]:
    # Stricter than Go, which ignores bytes after the first value: a Go peer never
    # sends any (one fresh encoder, one Encode), so extra bytes mean corruption.
    try:
        features = gob.decode(body, _FEATURES_TYPE)
    except Exception as exc:
        # Remote bytes that break the decoder (a GobError, or a decoder bug) close this
        # connection only: nothing but RemoteProtocolError may leave receive_data.
        raise MeshProtocolError("bad_features", f"cannot decode features: {exc}") from exc
    return dict(features)


def _encode_features(features: Mapping[str, str]) -> bytes:
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in features.items()):
        raise LocalProtocolError("features must map str to str")
    return gob.encode(_FEATURES_TYPE, dict(features))


def _local_conn_id(features: Mapping[str, str]) -> int:
    text = features.get("ConnID")
    conn_id = _go_parse_uint(text, 64)
    if conn_id is None:
        raise LocalProtocolError(f"our features need a uint64 ConnID, got {text!r}")
    return conn_id


class _ReceiveBuffer:
    """Bytes received but not yet consumed; reads advance an offset, compact() drops
    the consumed prefix once per receive_data call (no quadratic copying)."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        self._data += data

    def peek(self, n: int) -> bytes:
        return bytes(self._data[self._pos:self._pos + n])

    def available(self) -> int:
        return len(self._data) - self._pos

    def take(self, n: int) -> bytes | None:
        if self.available() < n:
            return None
        out = bytes(self._data[self._pos:self._pos + n])
        self._pos += n
        return out

    def compact(self) -> None:
        del self._data[:self._pos]
        self._pos = 0
