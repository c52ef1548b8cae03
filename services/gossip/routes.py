"""Unicast and broadcast routes over the topology (mesh:peer.go `routes`, mesh:routes.go).

Every peer runs the same deterministic breadth-first search over the same topology, so
a Go router and this one pick the same next hops; any difference loses or duplicates
broadcasts in a mixed mesh. The rules, exactly as mesh:
- BFS from a start peer, one level at a time; each level is visited in ascending
  PeerName order (the uint64 value).
- A peer is reached from the first (lowest-named) peer of the previous level that has
  a usable connection to it; it inherits that parent's next hop. The start's direct
  neighbours are their own next hop; the start maps to UNKNOWN_PEER_NAME (0).
- "Established and symmetric" (`unicast`, `broadcast`, used for data frames): a
  connection counts only if it is established and the far end lists an established
  connection back. "All" (`unicast_all`, `broadcast_all`, used for gossip): every
  connection counts, in the direction it is listed.
- Broadcast next hops for frames from source X: BFS from X until it reaches us; our
  usable neighbours that BFS has not already reached are the hops.

Recalculation is explicit: `request_recalculate()` marks the tables stale (the shell
coalesces with a 100 ms timer, as mesh does), `recalculate()` rebuilds them, and
`ensure_recalculated()` rebuilds only if stale. Broadcast hops for sources other than
us are computed on first use and cached until the next recalculation.
"""
from __future__ import annotations

import math
import random
from typing import Iterator, Mapping, Protocol

from services.gossip.peer import Peer
from shared.weave.peer_name import UNKNOWN_PEER_NAME, PeerName


class PeerTable(Protocol):
    """What routes are computed from (`peers.Peers` is one)."""

    @property
    def ourself(self) -> Peer: ...

    @property
    def by_name(self) -> Mapping[PeerName, Peer]: ...

RECALCULATE_DELAY = 0.1
"""Seconds the shell waits to coalesce recalculation requests (mesh recalcDeferTime)."""


def connected_peers(
    peers: Mapping[PeerName, Peer], name: PeerName, symmetric: bool, exclude: Mapping | set = ()
) -> Iterator[PeerName]:
    """Names of peers `name` has a usable connection to, skipping `exclude`.

    A connection to a name we hold no record of is skipped (mesh would follow a stale
    pointer there; that only happens for peers unreachable from us).
    """
    peer = peers.get(name)
    if peer is None:
        return
    for remote_name, conn in peer.connections.items():
        if symmetric and not conn.established:
            continue
        if remote_name in exclude:
            continue
        remote = peers.get(remote_name)
        if remote is None:
            continue
        if not symmetric:
            yield remote_name
            continue
        back = remote.connections.get(name)
        if back is not None and back.established:
            yield remote_name


def peer_routes(
    peers: Mapping[PeerName, Peer],
    start: PeerName,
    symmetric: bool,
    stop_at: PeerName | None = None,
) -> tuple[bool, dict[PeerName, PeerName]]:
    """mesh's `Peer.routes`: the next-hop map from `start`, and whether the BFS stopped
    on reaching `stop_at` (in which case the map holds only what was reached so far)."""
    routes: dict[PeerName, PeerName] = {start: UNKNOWN_PEER_NAME}
    next_level = [start]
    while next_level:
        level = sorted(next_level)
        next_level = []
        for cur in level:
            if cur == stop_at:
                return True, routes
            for remote in list(connected_peers(peers, cur, symmetric, routes)):
                next_level.append(remote)
                routes[remote] = remote if cur == start else routes[cur]
    return False, routes


class Routes:
    """Our routing tables, derived from `peers` (whose `ourself` is the local peer)."""

    def __init__(self, peers: PeerTable) -> None:
        self._peers = peers
        self._ourself = peers.ourself.name
        self._unicast: dict[PeerName, PeerName] = {self._ourself: UNKNOWN_PEER_NAME}
        self._unicast_all: dict[PeerName, PeerName] = {self._ourself: UNKNOWN_PEER_NAME}
        self._broadcast: dict[PeerName, list[PeerName]] = {self._ourself: []}
        self._broadcast_all: dict[PeerName, list[PeerName]] = {self._ourself: []}
        self.stale = False

    # --- recalculation -------------------------------------------------------------

    def request_recalculate(self) -> bool:
        """Mark the tables stale. True if they were fresh, i.e. the shell should now
        arm its RECALCULATE_DELAY timer; later requests coalesce into that one."""
        was_fresh = not self.stale
        self.stale = True
        return was_fresh

    def ensure_recalculated(self) -> None:
        if self.stale:
            self.recalculate()

    def recalculate(self) -> None:
        by_name = self._peers.by_name
        self._unicast = peer_routes(by_name, self._ourself, True)[1]
        self._unicast_all = peer_routes(by_name, self._ourself, False)[1]
        self._broadcast = {self._ourself: self._calculate_broadcast(self._ourself, True)}
        self._broadcast_all = {self._ourself: self._calculate_broadcast(self._ourself, False)}
        self.stale = False

    # --- lookups ---------------------------------------------------------------------

    def unicast(self, name: PeerName) -> PeerName | None:
        """Next hop towards `name` over established symmetric connections; None if
        unreachable; UNKNOWN_PEER_NAME for ourselves."""
        return self._unicast.get(name)

    def unicast_all(self, name: PeerName) -> PeerName | None:
        """As `unicast`, over all connections (used to relay gossip unicasts)."""
        return self._unicast_all.get(name)

    def broadcast(self, source: PeerName) -> list[PeerName]:
        """Neighbours to forward a data broadcast from `source` to (sorted)."""
        return self._lookup_broadcast(source, self._broadcast, True)

    def broadcast_all(self, source: PeerName) -> list[PeerName]:
        """Neighbours to forward a gossip broadcast from `source` to (sorted)."""
        return self._lookup_broadcast(source, self._broadcast_all, False)

    def unicast_table(self, symmetric: bool = True) -> dict[PeerName, PeerName]:
        return dict(self._unicast if symmetric else self._unicast_all)

    def random_neighbours(self, except_: PeerName, rng: random.Random) -> list[PeerName]:
        """mesh's randomNeighbours: min(2*log2(#peers reachable), #distinct next hops)
        distinct next hops other than `except_`, each draw weighted by how many
        destinations route through that neighbour (favouring bottleneck links)."""
        weights: dict[PeerName, int] = {}
        for hop in self._unicast_all.values():
            if hop != UNKNOWN_PEER_NAME and hop != except_:
                weights[hop] = weights.get(hop, 0) + 1
        needed = int(min(2 * math.log2(len(self._unicast_all)), len(weights)))
        items = sorted(weights.items())
        total = sum(weights.values())
        chosen: list[PeerName] = []
        while len(chosen) < needed:
            point = rng.randrange(total)
            for i, (hop, count) in enumerate(items):
                if point < count:
                    chosen.append(hop)
                    total -= count
                    del items[i]
                    break
                point -= count
        return chosen

    def status(self) -> dict:
        """`UnicastRoutes` and `BroadcastRoutes` of /report (established & symmetric
        tables; broadcast entries for every source looked up since the last recalc).
        An empty Via list is None, as Go's JSON gives null."""
        unicast = [{"Dest": str(d), "Via": str(v)} for d, v in sorted(self._unicast.items())]
        broadcast = [
            {"Source": str(s), "Via": [str(h) for h in hops] or None}
            for s, hops in self._broadcast.items()
        ]
        return {"UnicastRoutes": unicast, "BroadcastRoutes": broadcast}

    # --- helpers ---------------------------------------------------------------------

    def _lookup_broadcast(
        self, source: PeerName, cache: dict[PeerName, list[PeerName]], symmetric: bool
    ) -> list[PeerName]:
        hops = cache.get(source)
        if hops is None:
            hops = cache[source] = self._calculate_broadcast(source, symmetric)
        return list(hops)

    def _calculate_broadcast(self, source: PeerName, symmetric: bool) -> list[PeerName]:
        by_name = self._peers.by_name
        if source not in by_name:
            return []
        found, reached = peer_routes(by_name, source, symmetric, stop_at=self._ourself)
        if not found:
            return []
        return sorted(connected_peers(by_name, self._ourself, symmetric, reached))
