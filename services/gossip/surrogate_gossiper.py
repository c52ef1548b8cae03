"""The stand-in owner of a gossip channel nobody here understands (mesh:surrogate_gossiper.go).

A peer must relay every channel, even ones it does not implement, or a mesh with a
partial deployment loses gossip. The surrogate:
- ignores unicasts addressed to us,
- relays every broadcast as received,
- relays gossip unless an identical payload (FNV-64a, then byte compare) was seen
  recently. Remembered payloads are pruned, oldest first, when a new one is stored:
  those not newer than one gossip interval are dropped. A payload still remembered
  past that age (nothing new arrived to prune it) still counts as a duplicate, as in
  mesh.
"""
from __future__ import annotations

from dataclasses import dataclass

from shared.config import GossipSettings
from shared.weave.peer_name import PeerName

GOSSIP_INTERVAL = GossipSettings().gossip_interval_s
"""Seconds between periodic full gossip rounds (production's, mesh defaultGossipInterval)."""

_FNV64_OFFSET = 0xCBF29CE484222325
_FNV64_PRIME = 0x100000001B3
_MASK64 = (1 << 64) - 1


def fnv64a(data: bytes) -> int:
    """Go's hash/fnv New64a over `data`."""
    h = _FNV64_OFFSET
    for byte in data:
        h = ((h ^ byte) * _FNV64_PRIME) & _MASK64
    return h


@dataclass(frozen=True)
class SurrogateGossipData:
    """Opaque payloads to pass on, each re-sent as its own message."""

    messages: tuple[bytes, ...]

    def encode(self) -> list[bytes]:
        return list(self.messages)

    def merge(self, other: "SurrogateGossipData") -> "SurrogateGossipData":
        """Append the other's messages, skipping ones already pending (mesh appends
        blindly; an identical pending payload would only be sent twice)."""
        extra = tuple(m for m in other.messages if m not in self.messages)
        return SurrogateGossipData(self.messages + extra)


@dataclass(frozen=True)
class _Seen:
    payload: bytes
    digest: int
    at: float


class SurrogateGossiper:
    """Implements the Gossiper protocol of `gossip_channel` for an unknown channel."""

    def __init__(self, gossip_interval: float = GOSSIP_INTERVAL) -> None:
        self._interval = gossip_interval
        self._seen: list[_Seen] = []

    def on_gossip_unicast(self, src: PeerName, payload: bytes, now: float) -> None:
        return None

    def on_gossip_broadcast(self, src: PeerName, payload: bytes, now: float) -> SurrogateGossipData:
        return SurrogateGossipData((payload,))

    def gossip(self, now: float) -> None:
        return None

    def on_gossip(self, payload: bytes, now: float) -> SurrogateGossipData | None:
        """The payload to relay, or None if an identical one is remembered."""
        digest = fnv64a(payload)
        for seen in self._seen:
            if seen.digest == digest and seen.payload == payload:
                return None
        cutoff = now - self._interval
        keep_from = next((i for i, s in enumerate(self._seen) if s.at > cutoff), len(self._seen))
        self._seen = self._seen[keep_from:] + [_Seen(payload, digest, now)]
        return SurrogateGossipData((payload,))

    def remembered(self) -> int:
        """How many payloads are held for de-duplication (bounded by one interval's worth)."""
        return len(self._seen)
