"""The mesh's data-plane routes as the sleeve's frame router needs them (frame_router.NextHops),
fed by the gossip service's TopologyEvents (sans-I/O).

The gossip router computes the tables exactly as mesh does (established, symmetric
connections; broadcast next hops per source), so forwarding here agrees with every
other peer, Weave Net's included. Names arrive as MAC strings and are kept as ints,
the form the sleeve codec decodes from the wire.
"""
from __future__ import annotations

from shared.schemas.mesh import TopologyEvent


def peer_int(name: str) -> int:
    """aa:00:00:00:00:01 -> 0xAA0000000001."""
    return int(name.replace(":", ""), 16)


class TopologyRoutes:
    """Unicast and broadcast next hops, and the set of known peers (`peers` is kept as
    the same set object, so an overlay holding it sees every update)."""

    def __init__(self) -> None:
        self.ourself: int | None = None
        self.peers: set[int] = set()
        self._unicast: dict[int, int] = {}
        self._broadcast: dict[int, list[int]] = {}
        self.nicknames: dict[int, str] = {}

    def unicast(self, name: int) -> int | None:
        return self._unicast.get(name)

    def broadcast(self, source: int) -> list[int]:
        return self._broadcast.get(source, [])

    def update(self, event: TopologyEvent) -> list[int]:
        """Take a new event; returns the peers it says were removed."""
        self.ourself = peer_int(event.ourself)
        self.peers.clear()
        self.peers.update(peer_int(p.name) for p in event.peers)
        self.nicknames = {peer_int(p.name): p.nickname for p in event.peers}
        self._unicast = {peer_int(d): peer_int(v) for d, v in event.unicast.items()}
        self._broadcast = {peer_int(s): [peer_int(h) for h in hops] for s, hops in event.broadcast.items()}
        return [peer_int(n) for n in event.removed]
