"""The owner's side of a gossip channel: what ipam, dns and npc use to talk to the mesh.

Two layers:
- `MeshChannel(bus, channel)`: the transport. It publishes the owner's gossip
  (MeshSend) to the gossip service, feeds what the mesh delivered (MeshReceive) to
  `on_receive`, and keeps the owner's view of the topology current
  (`weave.events.topology`, plus a snapshot from `weave.gossip.peers` at start; a
  restarted gossip service publishes new events as its connections come back), since
  owners drop state of peers that are gone. A sender of broadcasts only (Scope's
  probe) uses it alone.
- `OwnedChannel(bus, channel, owner, gossip_interval_s)`: the owner-side library
  (mesh's gossip.go for an owner outside the router's process). The owner implements
  `ChannelOwner` (its whole state, and how it merges gossip, broadcasts and unicasts);
  the library owns the periodic round, the catch-up of new neighbours, the optional
  pull, and one bounded, ordered outbox for everything the owner sends. Its rules are
  in `shared/gossip_owner.py` (the sans-I/O core).

Nothing here blocks on the gossip service: sends to a gossip service that is down are
lost, as gossip on a broken connection is, and periodic gossip repairs them.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Awaitable, Callable, Protocol

from opentelemetry import context as otel_context
from pydantic import ValidationError

from shared import subjects
from shared.bus import Bus, BusError, BusMsg
from shared.gossip_owner import Action, Dropped, GossipOwnerCore, HandToOwner, SendPull, SendState
from shared.schemas.mesh import MeshReceive, MeshSend, PeersRequest, TopologyEvent
from shared.weave.peer_name import PeerName

log = logging.getLogger(__name__)
OUTBOX_LIMIT = 10_000
"""Messages an owner may have waiting for the bus; past it they are dropped (logged):
periodic gossip repairs what was lost."""


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


class ChannelOwner(Protocol):
    """What the owner of a gossip channel implements (mesh's Gossiper, minus relaying,
    which the gossip service does). Deliveries come one at a time, in the order the
    gossip service published them; topology events may come between them."""

    def gossip(self) -> list[bytes]:
        """Our whole state, one payload per message ([]: nothing to say). Sent in the
        periodic round, down to each new neighbour, and in answer to a pull."""

    async def on_gossip(self, payload: bytes) -> None:
        """Merge periodic or catch-up gossip (mesh does not say who sent it)."""

    async def on_gossip_broadcast(self, src: PeerName, payload: bytes) -> None:
        """Merge a broadcast that peer `src` originated."""

    async def on_gossip_unicast(self, src: PeerName, payload: bytes) -> None:
        """Handle a unicast from `src` addressed to us."""

    async def on_topology(self, event: TopologyEvent) -> None:
        """The mesh changed: drop state of peers that are gone, learn new ones. Called
        before the library catches up the new neighbours."""


class OwnedChannel:
    """A gossip channel owned by a local service. Construct, then `start()`; sending
    (`broadcast`, `unicast`, `gossip`, `gossip_round`) never blocks: messages leave in
    order through one bounded outbox."""

    def __init__(self, bus: Bus, channel: str, owner: ChannelOwner, gossip_interval_s: float, *,
                 pull: bytes | None = None, outbox_limit: int = OUTBOX_LIMIT) -> None:
        """`gossip_interval_s`: the period of the full-state round (each service's
        configuration). `pull`: see gossip_owner (None: the channel has no pulls)."""
        self.mesh = MeshChannel(bus, channel)
        self.channel, self.owner = channel, owner
        self._interval_s, self._pull = gossip_interval_s, pull
        self._outbox: asyncio.Queue[tuple[MeshSend, otel_context.Context]] = asyncio.Queue(maxsize=outbox_limit)
        self._tasks: list[asyncio.Task] = []
        self.core: GossipOwnerCore | None = None

    @property
    def topology(self) -> TopologyEvent | None:
        return self.mesh.topology

    async def start(self) -> None:
        """Subscribe, take the topology snapshot (the first catch-up) and start the
        sender and the gossip timer."""
        loop = asyncio.get_running_loop()
        self.core = GossipOwnerCore(self._interval_s, loop.time(), self._pull)
        self._tasks = [loop.create_task(self._sender()), loop.create_task(self._timer())]
        await self.mesh.start(self._on_receive, self._on_topology)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    # -- sending ---------------------------------------------------------------------------
    def broadcast(self, payload: bytes) -> None:
        self._send(MeshSend(kind="broadcast", payload=payload))

    def unicast(self, dst: PeerName, payload: bytes) -> None:
        self._send(MeshSend(kind="unicast", payload=payload, dst=dst))

    def gossip(self, payload: bytes, neighbour: PeerName | None = None) -> None:
        """To random neighbours, or only down the connection to `neighbour`."""
        self._send(MeshSend(kind="gossip", payload=payload, dst=neighbour))

    def gossip_round(self) -> None:
        """Our whole state to random neighbours now (what the timer does every interval)."""
        self._run([SendState("gossip")])

    def _send(self, msg: MeshSend) -> None:
        """Queue `msg` with the trace context it was made in: the publish, in the sender
        task, continues the trace (one `weave attach` is followed onto other hosts)."""
        try:
            self._outbox.put_nowait((msg, otel_context.get_current()))
        except asyncio.QueueFull:
            log.warning("%s: dropping a %s for %s: outbox full", self.channel, msg.kind, msg.dst or "the mesh")

    async def _sender(self) -> None:
        while True:
            msg, ctx = await self._outbox.get()
            token = otel_context.attach(ctx)
            try:
                await self.mesh.bus.publish(subjects.mesh_out(self.channel), msg)
            except Exception as exc:  # nats raises several kinds while reconnecting; periodic gossip repairs
                log.warning("%s: cannot send a %s: %s", self.channel, msg.kind, exc)
            finally:
                otel_context.detach(token)

    # -- the core's actions ----------------------------------------------------------------
    def _run(self, actions: list[Action]) -> list[HandToOwner]:
        """Carry out the sends (the owner's state is asked once per batch); return what
        is for the owner."""
        state: list[bytes] | None = None
        for_owner: list[HandToOwner] = []
        for action in actions:
            if isinstance(action, SendState):
                if state is None:
                    state = self.owner.gossip()
                for payload in state:
                    if action.kind == "unicast":
                        self.unicast(action.dst, payload)
                    else:
                        self.gossip(payload, action.dst)
            elif isinstance(action, SendPull):
                self.unicast(action.dst, self._pull)
            else:
                for_owner.append(action)
        return for_owner

    async def _on_receive(self, msg: MeshReceive) -> None:
        result = self.core.on_receive(msg)
        if isinstance(result, Dropped):
            log.warning("%s: dropping a %s from %s: %s", self.channel, msg.kind, msg.src, result.reason)
            return
        for hand in self._run(result):
            if hand.kind == "gossip":
                await self.owner.on_gossip(hand.payload)
            elif hand.kind == "broadcast":
                await self.owner.on_gossip_broadcast(hand.src, hand.payload)
            else:
                await self.owner.on_gossip_unicast(hand.src, hand.payload)

    async def _on_topology(self, event: TopologyEvent) -> None:
        await self.owner.on_topology(event)
        self._run(self.core.on_topology(event))

    async def _timer(self) -> None:
        """Sleep until the core's deadline, then tick; a failing round is logged and
        the next one still comes."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(max(0.0, self.core.next_deadline() - loop.time()))
            try:
                self._run(self.core.tick(loop.time()))
            except Exception:
                log.exception("%s: periodic gossip failed", self.channel)
