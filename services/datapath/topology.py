"""The mesh's data-plane routes as the sleeve's frame router needs them (frame_router.NextHops),
fed by the gossip service's TopologyEvents (sans-I/O).

The gossip router computes the tables exactly as mesh does (established, symmetric
connections; broadcast next hops per source), so forwarding here agrees with every
other peer, Weave Net's included. Peers are PeerNames, as the events bring them; the
sleeve looks them up with the plain ints it decodes from frames (a PeerName is an int:
equal ints hash and compare equal).
"""
from __future__ import annotations

from shared.schemas.mesh import TopologyEvent
from shared.weave.peer_name import PeerName


class TopologyRoutes:
    """Unicast and broadcast next hops, and the set of known peers (`peers`: a new
    frozenset at every update, never changed in place; pass it on to who needs it)."""

    def __init__(self) -> None:
        self.ourself: PeerName | None = None
        self.peers: frozenset[PeerName] = frozenset()
        self._unicast: dict[PeerName, PeerName] = {}
        self._broadcast: dict[PeerName, list[PeerName]] = {}
        self.nicknames: dict[PeerName, str] = {}

    def unicast(self, name: int) -> PeerName | None:
        return self._unicast.get(name)

    def broadcast(self, source: int) -> list[PeerName]:
        return self._broadcast.get(source, [])

    def update(self, event: TopologyEvent) -> list[PeerName]:
        """Take a new event; returns the peers it says were removed."""
        self.ourself = event.ourself
        self.peers = frozenset(p.name for p in event.peers)
        self.nicknames = {p.name: p.nickname for p in event.peers}
        self._unicast = dict(event.unicast)
        self._broadcast = {source: list(hops) for source, hops in event.broadcast.items()}
        return list(event.removed)
