"""What IPAM peers say to each other on channel `IPallocation`, as plain values.

`codec.py` turns these into the gob bytes a Go router sends and back; the cores only
ever see these values.

- `IpamGossip` (Weave's gossipState): the payload of gossip and broadcasts, and of
  a RingUpdate unicast. `paxos` is present only while the sender has no ring (and is
  an elector); `ring` once it has one. Neither present: an observer asking for a ring.
- Unicasts (1 type byte + gob value): 0 `SpaceRequest`, 1 `RingUpdate`,
  2 `SpaceRequestDenied`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from shared.weave.peer_name import PeerName
from services.ipam.address import Range
from services.ipam.paxos import PaxosClaims
from services.ipam.ring import Ring

MSG_SPACE_REQUEST = 0
MSG_RING_UPDATE = 1
MSG_SPACE_REQUEST_DENIED = 2


@dataclass
class IpamGossip:
    now: int  # unix seconds of the sender; kept for compatibility, not checked
    nicknames: dict[PeerName, str] = field(default_factory=dict)
    paxos: PaxosClaims | None = None
    ring: Ring | None = None


@dataclass(frozen=True)
class SpaceRequest:
    """Please give me free space in `range` (a single address for a claim)."""

    range: Range


@dataclass
class RingUpdate:
    """Here is my ring: the answer to a SpaceRequest, or to a ring-less broadcast."""

    state: IpamGossip


@dataclass(frozen=True)
class SpaceRequestDenied:
    """I own `range` (a claimed address) and will not give it away."""

    range: Range


Unicast = Union[SpaceRequest, RingUpdate, SpaceRequestDenied]
