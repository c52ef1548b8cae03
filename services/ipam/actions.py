"""What the allocator core asks its shell to do (its only outputs besides queries).

Every input method of `Allocator` returns a list of these, in order. The shell:
- `Reply`: answers the local request with that `request_id` (result or error);
- `Broadcast`: sends `state` as a GossipBroadcast on channel IPallocation. At most one
  per returned list, carrying the latest state (IPAM gossip data merges to "latest");
- `SendUnicast`: sends `message` to peer `dest` (GossipUnicast);
- `Persist`: saves `Allocator.snapshot()` (the ring or the owned addresses changed).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable, Union

from shared.weave.peer_name import PeerName
from services.ipam.errors import RequestError
from services.ipam.messages import IpamGossip, Unicast


@dataclass(frozen=True)
class Reply:
    request_id: Hashable
    result: Any = None
    error: RequestError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Broadcast:
    state: IpamGossip


@dataclass(frozen=True)
class SendUnicast:
    dest: PeerName
    message: Unicast


@dataclass(frozen=True)
class Persist:
    pass


Action = Union[Reply, Broadcast, SendUnicast, Persist]
