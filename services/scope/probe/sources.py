"""Where a spy's inputs come from (the shell's reading side).

- `read_local`: the blocking part, run in a thread at each spy: /proc (processes of the
  host's namespace and of every attached container's), each namespace's sockets, the
  host's facts;
- `Remote`: what other services know, kept fresh by one polling task and by events:
  the attached containers (`weave.datapath.containers`, and `weave.events.containers`
  as they change), the router's status (Weave's `GET 127.0.0.1:6784/report`, which the
  gossip service composes from every service's part: the way `weave report` and Scope's
  own weave client read it), and the flows npc blocked (`weave.npc.blocked`). A service
  that does not answer leaves the last answer in place (containers), or none (status,
  blocked: they would be stale), and is asked again at the next poll.
"""
from __future__ import annotations

import asyncio
import logging

import aiohttp

from services.scope.probe.host import HostFacts, read_host_facts
from services.scope.probe.walker import NamespaceSockets, ProcessSample, ProcWalker
from shared import subjects
from shared.bus import Bus, BusError, BusMsg
from shared.clock import Clock
from shared.schemas.datapath import ContainerEvent, ContainersReply, ContainersRequest
from shared.schemas.npc import BlockedFlow, BlockedReply, BlockedRequest

log = logging.getLogger(__name__)
WEAVE_REPORT_URL = "http://127.0.0.1:6784/report"
"""The router's API on this host (Weave's fixed port), as the CLI and Scope's probe use."""
REQUEST_TIMEOUT_S = 2.0
STATUS_TIMEOUT_S = 8.0  # the router waits up to 5 s for each service's part of /report


def read_local(walker: ProcWalker, host_netns: int, containers: dict[int, str],
               networks: tuple[str, ...] | None = None
               ) -> tuple[HostFacts, list[ProcessSample], list[NamespaceSockets]]:
    """Blocking: host facts, the processes of the host's and the containers' network
    namespaces, and each namespace's connections (read through one of its processes;
    a container namespace without processes has no sockets to show). `networks`: the
    host's addresses when the caller keeps them (host.LocalNetworks), else read now."""
    facts = read_host_facts(walker.root, networks)
    samples = walker.walk({host_netns, *containers})
    readers: dict[int, int | str] = {host_netns: "self"}
    for s in samples:
        readers.setdefault(s.netns, s.pid)
    sockets = [ns for netns, reader in readers.items() if (ns := walker.sockets(netns, samples, reader))]
    walker.forget_sockets({c.inode for ns in sockets for c in ns.connections})
    return facts, samples, sockets


class Remote:
    def __init__(self, bus: Bus, clock: Clock, blocked_window_s: float, weave_url: str = WEAVE_REPORT_URL) -> None:
        self.bus, self.clock, self.blocked_window_s, self.weave_url = bus, clock, blocked_window_s, weave_url
        self.containers: dict[str, ContainerEvent] = {}
        self.weave_status: dict | None = None
        self.blocked: list[BlockedFlow] = []
        self.polls = 0

    async def start(self) -> None:
        await self.bus.subscribe(subjects.event("containers"), self._on_container_event)

    def container_namespaces(self) -> dict[int, str]:
        return {e.netns_inode: e.container_id for e in self.containers.values() if e.netns_inode}

    async def poll_forever(self, interval_s: float, session: aiohttp.ClientSession) -> None:
        while True:
            await self.poll(session)
            await asyncio.sleep(interval_s)

    async def poll(self, session: aiohttp.ClientSession) -> None:
        await asyncio.gather(self._poll_containers(), self._poll_status(session), self._poll_blocked())
        self.polls += 1

    async def _poll_containers(self) -> None:
        try:
            reply = await self.bus.request(subjects.request("datapath", "containers"), ContainersRequest(),
                                           ContainersReply, timeout=REQUEST_TIMEOUT_S)
        except BusError as exc:
            log.debug("no container list from the datapath: %s", exc)
            return
        self.containers = {e.container_id: e for e in reply.containers if e.kind == "attached"}

    async def _poll_status(self, session: aiohttp.ClientSession) -> None:
        try:
            async with session.get(self.weave_url, timeout=aiohttp.ClientTimeout(total=STATUS_TIMEOUT_S)) as resp:
                self.weave_status = await resp.json(content_type=None) if resp.status == 200 else None
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
            log.debug("no router status: %s", exc)
            self.weave_status = None

    async def _poll_blocked(self) -> None:
        since = self.clock.now() - self.blocked_window_s
        try:
            reply = await self.bus.request(subjects.request("npc", "blocked"), BlockedRequest(since_unix=since),
                                           BlockedReply, timeout=REQUEST_TIMEOUT_S)
        except BusError as exc:
            log.debug("no blocked flows from npc: %s", exc)
            self.blocked = []
            return
        self.blocked = list(reply.flows)

    async def _on_container_event(self, msg: BusMsg) -> None:
        try:
            event = ContainerEvent.model_validate_json(msg.data)
        except ValueError as exc:
            log.warning("malformed container event: %s", exc)
            return
        if event.kind == "detached":
            self.containers.pop(event.container_id, None)
        else:
            self.containers[event.container_id] = event
