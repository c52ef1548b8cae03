"""The topology: every peer we know, including ourselves (mesh:peers.go).

Merge rule for a received topology update (mesh `applyUpdate`):
1. Peers we have never heard of are added as sent; names that only appear in someone's
   connection list are added as placeholders (no UID, version 0).
2. A record about a known peer replaces ours iff its (Version, UID, HasShortID) is
   greater, lexicographically (HasShortID true > false). Replacement is in place.
3. A record with our name but another UID is an old incarnation of us: we raise our
   version beyond it so our record wins everywhere.
4. Then garbage collection; the result names what improved (to re-gossip), what was
   dropped, and whether our own record changed (to broadcast it).
Applying the same update twice changes nothing the second time; updates commute for
every record, since each record keeps the maximum precedence it has seen.

Short IDs (12 bits, for fastdp) may collide: the lowest PeerName keeps the ID; if that
bumps us, we pick a new one (10 random tries, then a random free one) and re-broadcast.

Garbage collection drops every peer not reachable from us over all connections and not
held by a local reference (a connection in progress holds one). Run it after updates
and after a connection is deleted.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from services.gossip.peer import (
    ConnectionSummary,
    DecodedPeer,
    LocalPeer,
    Peer,
    decode_peers,
    encode_peers,
)
from shared.weave.peer_name import SHORT_ID_BITS, PeerName
from services.gossip.routes import peer_routes
from shared.errors import LocalProtocolError, RemoteProtocolError

if TYPE_CHECKING:
    from services.gossip.routes import Routes

SHORT_ID_SPACE = 1 << SHORT_ID_BITS
_RANDOM_SHORT_ID_TRIES = 10


@dataclass
class _ShortIDEntry:
    """Holders of one short ID: `peer` is the lowest-named (None if the ID is free but
    was used before), `others` the losers of a collision."""

    peer: Peer | None
    others: list[Peer] = field(default_factory=list)


@dataclass
class TopologyChange:
    """What a mutation of `Peers` did, for the caller to act on.

    `received`: names in the update as sent. `improved`: names whose record changed
    here (re-gossip these; empty means nothing new). `removed`: records dropped by GC
    (notify IPAM, DNS, the MAC cache). `local_modified`: our own record changed and
    must be gossiped. `short_ids_invalidated`: the short ID -> peer map changed.
    """

    received: set[PeerName] = field(default_factory=set)
    improved: set[PeerName] = field(default_factory=set)
    removed: list[Peer] = field(default_factory=list)
    local_modified: bool = False
    short_ids_invalidated: bool = False
    reassign_local_short_id: bool = False


class Peers:
    """All known peers. `ourself` is always present and never collected."""

    def __init__(self, ourself: LocalPeer, rng: random.Random) -> None:
        self.ourself = ourself
        self.by_name: dict[PeerName, Peer] = {}
        self._by_short_id: dict[int, _ShortIDEntry] = {}
        self._refs: dict[PeerName, int] = {}
        self._rng = rng
        self.fetch_with_default(ourself)

    # --- lookups ---------------------------------------------------------------------

    def __contains__(self, name: object) -> bool:
        return name in self.by_name

    def __iter__(self) -> Iterator[Peer]:
        return iter(list(self.by_name.values()))

    def __len__(self) -> int:
        return len(self.by_name)

    def names(self) -> set[PeerName]:
        return set(self.by_name)

    def fetch(self, name: PeerName) -> Peer | None:
        return self.by_name.get(name)

    def fetch_by_short_id(self, short_id: int) -> Peer | None:
        entry = self._by_short_id.get(short_id)
        return entry.peer if entry else None

    def ref_count(self, name: PeerName) -> int:
        return self._refs.get(name, 0)

    def status(self) -> list[dict]:
        """/report `Peers` (mesh:status.go PeerStatus), in name order."""
        return [_peer_status(p, self.by_name) for _, p in sorted(self.by_name.items())]

    # --- local references (connections in progress) ---------------------------------

    def fetch_with_default(self, peer: Peer) -> tuple[Peer, TopologyChange]:
        """The known record named like `peer` (or `peer` itself, now added), with one
        more local reference. Used when a connection introduces a peer; the change
        says whether its short ID bumped ours (then gossip our record)."""
        change = TopologyChange()
        existing = self.by_name.get(peer.name)
        if existing is None:
            self.by_name[peer.name] = existing = peer
            self._add_by_short_id(peer, change)
            self._finish(change)
        self._refs[peer.name] = self._refs.get(peer.name, 0) + 1
        return existing, change

    def fetch_and_add_ref(self, name: PeerName) -> Peer | None:
        """The known record for `name` with one more reference, or None if unknown."""
        peer = self.by_name.get(name)
        if peer is not None:
            self._refs[name] = self._refs.get(name, 0) + 1
        return peer

    def dereference(self, name: PeerName) -> None:
        if self._refs.get(name, 0) <= 0:
            raise LocalProtocolError(f"no local reference to {name}", peer=name)
        self._refs[name] -= 1

    # --- gossip ----------------------------------------------------------------------

    def encode(self, names: Iterable[PeerName] | None = None) -> bytes:
        """The topology payload for `names` (all if None); unknown names are skipped."""
        chosen = self.by_name if names is None else set(names)
        return encode_peers(self.by_name[n] for n in sorted(chosen) if n in self.by_name)

    def apply_update(self, payload: bytes) -> TopologyChange:
        """Decode (RemoteProtocolError on bad bytes, before anything changes) and merge."""
        return self.apply_decoded(decode_peers(payload))

    def apply_decoded(self, decoded: list[DecodedPeer]) -> TopologyChange:
        change = TopologyChange(received={p.name for p, _ in decoded})
        for peer in self._new_peers(decoded).values():
            self.by_name[peer.name] = peer
            self._add_by_short_id(peer, change)
        for incoming, conns in decoded:
            if self._merge_record(incoming, conns, change):
                change.improved.add(incoming.name)
        self._garbage_collect(change)
        change.improved -= {p.name for p in change.removed}
        self._finish(change)
        return change

    def garbage_collect(self) -> TopologyChange:
        change = TopologyChange()
        self._garbage_collect(change)
        self._finish(change)
        return change

    # --- merge -----------------------------------------------------------------------

    def _new_peers(self, decoded: list[DecodedPeer]) -> dict[PeerName, Peer]:
        new: dict[PeerName, Peer] = {}
        for incoming, _ in decoded:
            if incoming.name not in self.by_name:
                new[incoming.name] = incoming
        for _, conns in decoded:
            for conn in conns:
                name = conn.remote_name
                if name not in new and name not in self.by_name:
                    new[name] = Peer.placeholder(name)
        return new

    def _merge_record(
        self, incoming: Peer, conns: list[ConnectionSummary], change: TopologyChange
    ) -> bool:
        peer = self.by_name[incoming.name]
        if peer is self.ourself:
            if incoming.uid != peer.uid:
                change.local_modified |= self.ourself.set_version_beyond(incoming.version)
            return False
        if peer is incoming:
            peer.connections = _connections_map(conns)
            return True
        if incoming.precedence() <= peer.precedence():
            return False
        peer.version, peer.uid, peer.nickname = incoming.version, incoming.uid, incoming.nickname
        peer.connections = _connections_map(conns)
        if (incoming.short_id, incoming.has_short_id) != (peer.short_id, peer.has_short_id):
            self._delete_by_short_id(peer, change)
            peer.short_id, peer.has_short_id = incoming.short_id, incoming.has_short_id
            self._add_by_short_id(peer, change)
        return True

    def _garbage_collect(self, change: TopologyChange) -> None:
        _, reached = peer_routes(self.by_name, self.ourself.name, symmetric=False)
        for name, peer in list(self.by_name.items()):
            if name not in reached and self._refs.get(name, 0) == 0:
                del self.by_name[name]
                self._refs.pop(name, None)
                self._delete_by_short_id(peer, change)
                change.removed.append(peer)
        if change.removed and self.fetch_by_short_id(self.ourself.short_id) is not self.ourself:
            change.reassign_local_short_id = True

    def _finish(self, change: TopologyChange) -> None:
        if change.reassign_local_short_id and self._reassign_local_short_id(change):
            change.local_modified = True

    # --- short IDs -------------------------------------------------------------------

    def _add_by_short_id(self, peer: Peer, change: TopologyChange) -> None:
        if not peer.has_short_id:
            return
        entry = self._by_short_id.get(peer.short_id)
        if entry is None:
            self._by_short_id[peer.short_id] = _ShortIDEntry(peer)
        elif entry.peer is None:
            entry.peer = peer  # free, but used before: reuse invalidates
            change.short_ids_invalidated = True
        elif peer.name < entry.peer.name:
            if entry.peer is self.ourself:
                change.reassign_local_short_id = True
            entry.others.append(entry.peer)
            entry.peer = peer
            change.short_ids_invalidated = True
        else:
            entry.others.append(peer)

    def _delete_by_short_id(self, peer: Peer, change: TopologyChange) -> None:
        if not peer.has_short_id:
            return
        entry = self._by_short_id.get(peer.short_id)
        if entry is None:
            return
        if entry.peer is not peer:
            entry.others = [p for p in entry.others if p is not peer]
        elif entry.others:
            winner = min(entry.others, key=lambda p: p.name)
            entry.others.remove(winner)
            entry.peer = winner
            change.short_ids_invalidated = True
        else:
            entry.peer = None  # keep the entry to notice when the ID is reused

    def _reassign_local_short_id(self, change: TopologyChange) -> bool:
        short_id = self.choose_short_id()
        if short_id is None:
            return False  # all taken; GC retries when it frees some
        self._delete_by_short_id(self.ourself, change)
        self.ourself.set_short_id(short_id)
        self._add_by_short_id(self.ourself, change)
        return True

    def choose_short_id(self) -> int | None:
        """A free short ID: 10 random tries, then a uniformly random free one; None if
        all 4096 are held (mesh chooseShortID)."""
        for _ in range(_RANDOM_SHORT_ID_TRIES):
            candidate = self._rng.randrange(SHORT_ID_SPACE)
            if self.fetch_by_short_id(candidate) is None:
                return candidate
        free = [i for i in range(SHORT_ID_SPACE) if self.fetch_by_short_id(i) is None]
        if not free:
            return None
        return free[self._rng.randrange(len(free))]


def _connections_map(conns: list[ConnectionSummary]) -> dict[PeerName, ConnectionSummary]:
    return {c.remote_name: c for c in conns}


def _peer_status(peer: Peer, by_name: dict[PeerName, Peer]) -> dict:
    def nickname(name: PeerName) -> str:
        remote = by_name.get(name)
        return remote.nickname if remote is not None else ""

    conns = [
        {"Name": str(c.remote_name), "NickName": nickname(c.remote_name), "Address": c.remote_tcp_addr,
         "Outbound": c.outbound, "Established": c.established}
        for _, c in sorted(peer.connections.items())
    ]
    return {"Name": str(peer.name), "NickName": peer.nickname, "UID": int(peer.uid),
            "ShortID": peer.short_id, "Version": peer.version, "Connections": conns or None}


# --- the "topology" channel ----------------------------------------------------------

TOPOLOGY_CHANNEL = "topology"


@dataclass(frozen=True)
class TopologyGossipData:
    """Pending topology gossip: a set of names, encoded from the topology current at
    send time. Merge is set union (idempotent, commutative, associative)."""

    peers: Peers
    names: frozenset[PeerName]

    def encode(self) -> list[bytes]:
        return [self.peers.encode(self.names)]

    def merge(self, other: "TopologyGossipData") -> "TopologyGossipData":
        return TopologyGossipData(self.peers, self.names | other.names)


class TopologyGossiper:
    """Owner of the "topology" channel (mesh Router's Gossiper methods).

    Every applied update that changed something marks `routes` stale and is passed to
    `on_change`, where the shell refreshes the connection maker, reports removed peers
    and, if `local_modified`, gossips our own record (`gossip_neighbour_subset`).
    """

    def __init__(
        self,
        peers: Peers,
        routes: "Routes",
        on_change: Callable[[TopologyChange], None] | None = None,
    ) -> None:
        self._peers = peers
        self._routes = routes
        self._on_change = on_change

    def data(self, names: Iterable[PeerName] | None = None) -> TopologyGossipData:
        """Gossip data for `names` (all known peers if None)."""
        chosen = self._peers.names() if names is None else names
        return TopologyGossipData(self._peers, frozenset(chosen))

    def on_gossip_unicast(self, src: PeerName, payload: bytes, now: float) -> None:
        raise RemoteProtocolError("unexpected topology gossip unicast", src=src)

    def on_gossip_broadcast(self, src: PeerName, payload: bytes, now: float) -> TopologyGossipData | None:
        change = self._apply(payload)
        return self.data(change.received) if change.received else None

    def gossip(self, now: float) -> TopologyGossipData:
        return self.data()

    def on_gossip(self, payload: bytes, now: float) -> TopologyGossipData | None:
        change = self._apply(payload)
        return self.data(change.improved) if change.improved else None

    def _apply(self, payload: bytes) -> TopologyChange:
        change = self._peers.apply_update(payload)
        if change.improved or change.removed or change.local_modified:
            self._routes.request_recalculate()
            if self._on_change is not None:
                self._on_change(change)
        return change
