"""Gossip channels owned by another local service, reached over the bus.

The owner (ipam, dns, npc) runs in its own process, so the router cannot call it
synchronously the way mesh calls a Gossiper. A bridged channel therefore relays
exactly as the surrogate does (broadcasts as received, gossip unless seen within one
interval, unicasts not relayed) and hands every new message to the owner, in order,
through `deliver`. The owner merges; it sends its own gossip (periodic rounds, replies,
catch-up for new peers) as MeshSend messages. Relaying does not wait for the owner, so
a restarting owner never stalls the mesh, and peers still get every message.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

from shared.weave.peer_name import PeerName
from services.gossip.surrogate_gossiper import GOSSIP_INTERVAL, SurrogateGossipData, SurrogateGossiper


@dataclass(frozen=True)
class Deliver:
    """Hand `payload` of `channel` to its local owner."""

    channel: str
    kind: Literal["broadcast", "unicast", "gossip"]
    src: PeerName
    payload: bytes
    trace: str | None = None
    """W3C traceparent the sending weave-py peer attached (router.TRACE_TAG), if any."""


class BridgedGossiper(SurrogateGossiper):
    def __init__(self, channel: str, deliver: Callable[[Deliver], None],
                 gossip_interval: float = GOSSIP_INTERVAL) -> None:
        super().__init__(gossip_interval)
        self.channel = channel
        self._deliver = deliver

    def on_gossip_unicast(self, src: PeerName, payload: bytes, now: float) -> None:
        self._deliver(Deliver(self.channel, "unicast", src, payload))

    def on_gossip_broadcast(self, src: PeerName, payload: bytes, now: float) -> SurrogateGossipData:
        self._deliver(Deliver(self.channel, "broadcast", src, payload))
        return super().on_gossip_broadcast(src, payload, now)

    def on_gossip(self, payload: bytes, now: float) -> SurrogateGossipData | None:
        relay = super().on_gossip(payload, now)
        if relay is not None:  # a duplicate was delivered already
            self._deliver(Deliver(self.channel, "gossip", PeerName(0), payload))
        return relay
