"""What the owner of a gossip channel does besides its data, sans-I/O (mesh:gossip.go
and router.go for an owner in another process than its router).

An owner (ipam, dns, npc) keeps a mergeable state and says how to merge what arrives.
Everything else is here, written once: when to gossip the whole state, to whom, and
what to do with a delivery before the owner sees it. The asyncio shell is
`shared.mesh_channel.OwnedChannel`; this core takes events and `now` and returns
actions.

Rules:
- **A neighbour** is a peer other than ourselves that is reachable (a route over
  established, symmetric connections exists) and directly connected to us (the
  topology gives the address of our connection to it). It is keyed by name *and* UID:
  a peer whose router restarted has a new UID, lost what it knew, and is new again.
  A neighbour that drops out of the set (disconnected, unreachable, forgotten) and
  comes back is new again too.
- **A new neighbour** gets our whole state gossiped down the connection to it at once
  (mesh's sendAllGossipDown for a new or restarted peer), so it need not wait for the
  periodic round. At the owner's own start every neighbour is new: the first topology
  sends our (restored) state to each. Only direct neighbours: gossip down a
  connection we do not have is lost, and what a neighbour merges reaches the peers
  behind it by relaying and by its own gossip.
- **Pull** (owners of channels only weave-py peers speak, where an extra message kind
  is safe; Weave's own channels have none): a new neighbour also gets the owner's
  `pull` payload by unicast, and a pull received by unicast is answered by unicast
  with our whole state instead of being handed to the owner. That is how a restarted
  owner whose router kept running gets the others' state at once: its neighbours see
  nothing new (same connection, same UID), so only it can ask. A pull that arrives
  otherwise than by unicast is ignored.
- **Periodic gossip**: our whole state to random neighbours every `interval_s`, first
  one interval after start (mesh's gossip interval; it repairs lost broadcasts).
- Everything else delivered is handed to the owner by kind (gossip, broadcast,
  unicast). The sender arrives as a PeerName (MeshReceive parses it); a delivery with
  an unreadable sender, which only a broken gossip service would send, is refused by
  the schema and dropped by the shell (mesh_channel) before it gets here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from shared.schemas.mesh import MeshReceive, TopologyEvent
from shared.weave.peer_name import PeerName

Kind = Literal["broadcast", "unicast", "gossip"]


@dataclass(frozen=True)
class SendState:
    """Send the owner's whole state (its `gossip()`): `kind` "gossip" with `dst` None is
    the periodic round to random neighbours; "gossip" with `dst` goes down the
    connection to that neighbour only; "unicast" is routed to `dst` (a pull's answer)."""

    kind: Literal["gossip", "unicast"]
    dst: PeerName | None = None


@dataclass(frozen=True)
class SendPull:
    """Send the pull payload to `dst` by unicast."""

    dst: PeerName


@dataclass(frozen=True)
class HandToOwner:
    """Give a delivery to the owner to merge (`src` is UNKNOWN_PEER_NAME for gossip)."""

    kind: Kind
    src: PeerName
    payload: bytes


Action = SendState | SendPull | HandToOwner


@dataclass(frozen=True)
class Dropped:
    """A delivery not handed on, and why (for the shell's log)."""

    reason: str


def neighbours(event: TopologyEvent) -> set[tuple[PeerName, int]]:
    """(name, uid) of every neighbour in `event` (the definition above)."""
    return {(p.name, p.uid) for p in event.peers if p.name != event.ourself and p.reachable and p.address}


class GossipOwnerCore:
    """Catch-up, pull and the periodic round of one owned channel. `pull`: the owner's
    pull payload, or None for a channel without pulls."""

    def __init__(self, interval_s: float, now: float, pull: bytes | None = None) -> None:
        if interval_s <= 0:
            raise ValueError(f"gossip interval {interval_s!r} s: must be positive")
        self.interval_s, self.pull = interval_s, pull
        self._neighbours: set[tuple[PeerName, int]] = set()
        self._gossip_at = now + interval_s

    # -- inputs --------------------------------------------------------------------------
    def on_topology(self, event: TopologyEvent) -> list[Action]:
        """A new topology: catch-up (and a pull) for each neighbour new in it, in name order."""
        current = neighbours(event)
        fresh, self._neighbours = sorted(current - self._neighbours), current
        out: list[Action] = []
        for name, _ in fresh:
            out.append(SendState("gossip", name))
            if self.pull is not None:
                out.append(SendPull(name))
        return out

    def on_receive(self, msg: MeshReceive) -> list[Action] | Dropped:
        """A delivery from the mesh: a pull to answer, or something for the owner."""
        if self.pull is not None and msg.payload == self.pull:
            if msg.kind != "unicast":
                return Dropped(f"a pull by {msg.kind}: pulls come by unicast")
            return [SendState("unicast", msg.src)]
        return [HandToOwner(msg.kind, msg.src, msg.payload)]

    def tick(self, now: float) -> list[Action]:
        """The periodic round, if due."""
        if now < self._gossip_at:
            return []
        self._gossip_at = now + self.interval_s
        return [SendState("gossip")]

    # -- queries -------------------------------------------------------------------------
    def next_deadline(self) -> float:
        return self._gossip_at

    def known_neighbours(self) -> list[PeerName]:
        """The neighbours as of the last topology, in name order."""
        return sorted(name for name, _ in self._neighbours)

