"""A peer and its connections, as the topology sees them (mesh:peer.go, local_peer.go).

A `Peer` is one record of the topology: who it is (`name`, `nickname`, `uid`), how new
the record is (`version`), its fastdp `short_id`, and the connections it reports. The
`LocalPeer` is our own record; only it changes by local events, and every change bumps
its `version` so that our newer record wins the merge at every other peer:
- a connection added, deleted or marked established: +1
- our short ID changed (collision lost): +1
- someone gossips a record with our name but another UID (an old incarnation of us):
  version := theirs + 1, if theirs >= ours.

Wire form (topology gossip payload, mesh:peers.go): one gob stream of repeated pairs
`peerSummary`, `[]connectionSummary`, read until EOF, field names exactly as below.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Iterable

from shared.weave.peer_name import PeerName, PeerUID
from shared import gob
from shared.errors import LocalProtocolError, RemoteProtocolError

PEER_SUMMARY = gob.Struct(
    "peerSummary",
    [
        ("NameByte", gob.BYTES),
        ("NickName", gob.STRING),
        ("UID", gob.UINT),
        ("Version", gob.UINT),
        ("ShortID", gob.UINT),
        ("HasShortID", gob.BOOL),
    ],
)
CONNECTION_SUMMARY = gob.Struct(
    "connectionSummary",
    [
        ("NameByte", gob.BYTES),
        ("RemoteTCPAddr", gob.STRING),
        ("Outbound", gob.BOOL),
        ("Established", gob.BOOL),
    ],
)
CONNECTION_SUMMARIES = gob.Slice(CONNECTION_SUMMARY)

_UINT64_MAX = (1 << 64) - 1
_UINT16_MAX = (1 << 16) - 1


@dataclass(frozen=True)
class ConnectionSummary:
    """One connection as a peer reports it. `remote_tcp_addr` is "ip:port" of the far
    end as seen from the reporting peer; `outbound` means the reporting peer dialled."""

    remote_name: PeerName
    remote_tcp_addr: str
    outbound: bool
    established: bool


@dataclass(eq=False)
class Peer:
    """A topology record. Identity matters: `Peers` updates records in place.

    `uid == 0` with `version == 0` and no short ID is a placeholder: a peer we only
    know because someone reports a connection to it.
    """

    name: PeerName
    nickname: str = ""
    uid: PeerUID = PeerUID(0)
    version: int = 0
    short_id: int = 0
    has_short_id: bool = False
    connections: dict[PeerName, ConnectionSummary] = field(default_factory=dict)

    @classmethod
    def placeholder(cls, name: PeerName) -> "Peer":
        return cls(name=name)

    def precedence(self) -> tuple[int, int, bool]:
        """The merge order: a record replaces another iff its precedence is greater."""
        return (self.version, int(self.uid), self.has_short_id)

    def __str__(self) -> str:
        return f"{self.name}({self.nickname})"


class TieBreak(enum.Enum):
    """Outcome for a new connection that duplicates an existing one to the same peer."""

    WON = "won"  # keep the new one, shut the old one
    LOST = "lost"  # refuse the new one
    TIED = "tied"  # shut both


def break_tie(new_conn_uid: int, existing_conn_uid: int) -> TieBreak:
    """Both ends share the connection uid (local ConnID xor remote ConnID), so both
    make the same choice: the lower uid survives (mesh:connection.go breakTie)."""
    if new_conn_uid < existing_conn_uid:
        return TieBreak.WON
    if existing_conn_uid < new_conn_uid:
        return TieBreak.LOST
    return TieBreak.TIED


class LocalPeer(Peer):
    """Our own record. Connection changes go through these methods so that every
    change bumps `version` exactly as mesh does; callers must then recalculate routes
    and gossip our record (mesh:local_peer.go)."""

    def add_connection(self, conn: ConnectionSummary) -> None:
        """Record a new connection. The caller resolved duplicates (`break_tie`) and
        the connection limit first; adding over an existing one is our bug."""
        if conn.remote_name in self.connections:
            raise LocalProtocolError(
                f"connection to {conn.remote_name} already present", remote=conn.remote_name
            )
        if conn.remote_name == self.name:
            raise LocalProtocolError("connection to ourself", remote=conn.remote_name)
        self.connections[conn.remote_name] = conn
        self.version += 1

    def delete_connection(self, remote: PeerName) -> bool:
        """Forget the connection to `remote`; False (and no bump) if there was none."""
        if self.connections.pop(remote, None) is None:
            return False
        self.version += 1
        return True

    def connection_established(self, remote: PeerName) -> bool:
        """Mark the connection established (the overlay confirmed it); False if unknown."""
        conn = self.connections.get(remote)
        if conn is None:
            return False
        self.connections[remote] = ConnectionSummary(
            conn.remote_name, conn.remote_tcp_addr, conn.outbound, True
        )
        self.version += 1
        return True

    def set_short_id(self, short_id: int) -> None:
        self.short_id = short_id
        self.has_short_id = True
        self.version += 1

    def set_version_beyond(self, version: int) -> bool:
        """Make our version exceed `version`; True if ours changed."""
        if version >= self.version:
            self.version = version + 1
            return True
        return False

    def connection_limit_reached(self, limit: int) -> bool:
        """mesh's checkConnectionLimit: `limit` 0 means unlimited."""
        return limit != 0 and len(self.connections) >= limit


# --- codec -------------------------------------------------------------------------

DecodedPeer = tuple[Peer, list[ConnectionSummary]]


def encode_peers(peers: Iterable[Peer]) -> bytes:
    """The topology gossip payload for `peers`, in the order given."""
    enc = gob.Encoder()
    out = bytearray()
    for peer in peers:
        out += enc.encode(PEER_SUMMARY, _summary_value(peer))
        conns = [_connection_value(c) for _, c in sorted(peer.connections.items())]
        out += enc.encode(CONNECTION_SUMMARIES, conns)
    return bytes(out)


def decode_peers(payload: bytes) -> list[DecodedPeer]:
    """Parse a topology gossip payload. Raises RemoteProtocolError on any bad byte.

    As in mesh, a peer summary with its connection list cut off by EOF is dropped
    silently (mesh treats that EOF like the end of the stream).
    """
    try:
        dec = gob.Decoder(payload)
        result: list[DecodedPeer] = []
        while not dec.at_eof():
            summary = dec.decode(PEER_SUMMARY)
            if dec.at_eof():
                break
            conns = dec.decode(CONNECTION_SUMMARIES)
            result.append((_peer_from(summary), [_connection_from(c) for c in conns]))
        return result
    except gob.GobError as e:
        raise RemoteProtocolError(f"bad topology payload: {e}", reason="gob") from e
    except gob.NeedMoreData as e:
        raise RemoteProtocolError("topology payload truncated", reason="truncated") from e


def _summary_value(peer: Peer) -> dict:
    return {
        "NameByte": peer.name.to_bytes6(),
        "NickName": peer.nickname,
        "UID": int(peer.uid),
        "Version": peer.version,
        "ShortID": peer.short_id,
        "HasShortID": peer.has_short_id,
    }


def _connection_value(conn: ConnectionSummary) -> dict:
    return {
        "NameByte": conn.remote_name.to_bytes6(),
        "RemoteTCPAddr": conn.remote_tcp_addr,
        "Outbound": conn.outbound,
        "Established": conn.established,
    }


def _name_from(name_byte: bytes) -> PeerName:
    if len(name_byte) != 6:
        raise RemoteProtocolError(
            f"peer NameByte must be 6 bytes, got {len(name_byte)}", reason="name_length"
        )
    return PeerName.from_bytes6(name_byte)


def _peer_from(summary: dict) -> Peer:
    uid, version, short_id = summary.get("UID", 0), summary.get("Version", 0), summary.get("ShortID", 0)
    if uid > _UINT64_MAX or version > _UINT64_MAX or short_id > _UINT16_MAX:
        raise RemoteProtocolError("peer summary field out of range", reason="range")
    return Peer(
        name=_name_from(summary.get("NameByte", b"")),
        nickname=summary.get("NickName", ""),
        uid=PeerUID(uid),
        version=version,
        short_id=short_id,
        has_short_id=bool(summary.get("HasShortID", False)),
    )


def _connection_from(value: dict) -> ConnectionSummary:
    return ConnectionSummary(
        remote_name=_name_from(value.get("NameByte", b"")),
        remote_tcp_addr=value.get("RemoteTCPAddr", ""),
        outbound=bool(value.get("Outbound", False)),
        established=bool(value.get("Established", False)),
    )
