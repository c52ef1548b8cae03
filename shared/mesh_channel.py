"""The owner's side of a gossip channel: what ipam, dns and npc use to talk to the mesh.

`MeshChannel(bus, channel)` publishes the owner's gossip (MeshSend) to the gossip
service and feeds what the mesh delivered (MeshReceive) to `on_receive`. It also keeps
the owner's view of the topology current (`weave.events.topology`, plus a snapshot from
`weave.gossip.peers` at start; a restarted gossip service publishes new events as its
connections come back), since
owners drop state of peers that are gone. Nothing here blocks on the gossip service:
sends to a gossip service that is down are lost, as gossip on a broken connection is,
and periodic gossip repairs them.
"""
from __future__ import annotations

import logging
from typing import Awaitable, Callable

from pydantic import ValidationError

from shared import subjects
from shared.bus import Bus, BusError, BusMsg
from shared.schemas.mesh import MeshReceive, MeshSend, PeersRequest, TopologyEvent

log = logging.getLogger(__name__)


class MeshChannel:
    def __init__(self, bus: Bus, channel: str) -> None:
        self.bus, self.channel = bus, channel
        self.topology: TopologyEvent | None = None

    async def start(self, on_receive: Callable[[MeshReceive], Awaitable[None]],
                    on_topology: Callable[[TopologyEvent], Awaitable[None]] | None = None) -> None:
        self._on_receive, self._on_topology = on_receive, on_topology

        async def receive(msg: BusMsg) -> None:
            try:
                await on_receive(MeshReceive.model_validate_json(msg.data))
            except ValidationError as exc:
                log.warning("%s: malformed delivery from the gossip service: %s", self.channel, exc)

        async def topology(msg: BusMsg) -> None:
            await self._set_topology(TopologyEvent.model_validate_json(msg.data))

        await self.bus.subscribe(subjects.mesh_in(self.channel), receive)
        await self.bus.subscribe(subjects.event("topology"), topology)
        await self.refresh_topology()

    async def refresh_topology(self) -> bool:
        """Ask the gossip service for the topology now; False if it is not answering."""
        try:
            event = await self.bus.request(subjects.request("gossip", "peers"), PeersRequest(), TopologyEvent,
                                           timeout=2.0)
        except BusError:
            return False
        await self._set_topology(event)
        return True

    async def _set_topology(self, event: TopologyEvent) -> None:
        self.topology = event
        if self._on_topology is not None:
            await self._on_topology(event)

    async def send(self, kind: str, payload: bytes, dst: str | None = None) -> None:
        await self.bus.publish(subjects.mesh_out(self.channel), MeshSend(kind=kind, payload=payload, dst=dst))

    async def broadcast(self, payload: bytes) -> None:
        await self.send("broadcast", payload)

    async def unicast(self, dst: str, payload: bytes) -> None:
        await self.send("unicast", payload, dst)

    async def gossip(self, payload: bytes, neighbour: str | None = None) -> None:
        await self.send("gossip", payload, neighbour)
