"""The `ipam` service: Weave's IP address manager, an asyncio shell over the sans-I/O
`Allocator` (allocator.py).

Inputs, each handed to the core with `now`, whose actions are then carried out:
- gossip on channel IPallocation through OwnedChannel (shared/mesh_channel.py; the
  gossip service has relayed it already): on_gossip / on_gossip_broadcast /
  on_gossip_unicast. A refused ring (different seeds or range, a conflict) changes
  nothing; it is logged and shown in the bus status (`refused`);
- topology events: reachable peers and nicknames to `set_peers` (the library then
  gossips our full state down to each new neighbour);
- requests from the bus and Weave's HTTP routes (bus_api.py, http.py); ones that must
  wait (no ring yet, space asked of a peer) stay pending in the core until answered or
  until the caller's `wait_s` runs out, when they are cancelled;
- container events from the datapath: `attached` re-claims the container's addresses
  (Weave's attach and reclaim at start), `detached` frees them after the core's
  container-died timeout unless the container asks again;
- one timer at the core's next deadline; the library gossips the full state every
  gossip interval.
Actions: Broadcast and SendUnicast leave in order through the channel's bounded outbox; Persist
saves a snapshot to sqlite (store.py); a Reply resolves its waiting request only once
every change made so far is saved, so an answered allocation survives `kill -9`.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import sqlite3
from functools import partial
from typing import Any, Callable

from shared.weave.peer_name import UNKNOWN_PEER_NAME, PeerName
from services.ipam import bus_api, codec, status
from services.ipam.actions import Action, Broadcast, Persist, Reply, SendUnicast
from services.ipam.address import CIDR
from services.ipam.allocator import Allocator
from services.ipam.metrics import IpamCollector
from services.ipam.config import allocator_config, mode_name
from services.ipam.store import DB_FILE, Store
from shared import subjects
from shared.clock import sleep_or_wake
from shared.bus import BusError, BusMsg
from shared.errors import WeaveError
from shared.mesh_channel import OwnedChannel
from shared.schemas.datapath import ContainerEvent, ContainersReply, ContainersRequest
from shared.schemas.mesh import IPAM_CHANNEL, TopologyEvent
from shared.service import ServiceContext, run_service

log = logging.getLogger("weave.ipam")
REFUSED_LOG_INTERVAL_S = 60.0  # the same refused ring arrives with every gossip; log it this often
RECLAIM_WAIT_S = 3600.0  # background re-claims of attached containers wait this long for a ring
RECLAIM_RETRIES_S = (0.0, 1.0, 2.0, 4.0, 8.0, 16.0)  # pauses before each ask for the attached containers
EXPOSE_IDENT = "weave:expose"
NO_CONTAINER_ID = "_"  # owned.py's: the address is filed under itself


class IpamApp:
    def __init__(self) -> None:
        self.alloc: Allocator | None = None
        self.refused = ""
        self.left = self.stopping = False
        self._refused_logged = (0.0, "")
        self._waiting: dict[int, asyncio.Future[Reply]] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task] = set()
        self._dirty = self._saved = 0  # persist generations asked for / written
        self._armed: float | None = None  # the deadline the timer sleeps until
        self._save_error = ""
        self._closed = False  # the store, once stopping

    # -- life cycle ----------------------------------------------------------------------
    async def start(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        launch = ctx.config.launch
        settings = ctx.config.settings
        allocator = allocator_config(launch, settings)
        self.mode = mode_name(allocator)
        self._clock0 = (ctx.clock.now(), ctx.clock.monotonic())
        self._wake = asyncio.Event()
        self._save_lock = asyncio.Lock()
        self.channel = OwnedChannel(ctx.bus, IPAM_CHANNEL, self, settings.gossip_interval_s)
        self.store = await asyncio.to_thread(Store, launch.state_dir / DB_FILE)
        self.alloc = await self._restore(Allocator(allocator))
        self.apply(self.alloc.start(now=self.now()))
        ctx.registry.register(IpamCollector(lambda: self.alloc))
        await bus_api.register(self, ctx.bus, settings.max_waiting_requests)
        self._spawn(self._timer_loop())
        await self.channel.start()
        await ctx.bus.subscribe(subjects.event("containers"), self._on_container)
        self._spawn(self._reclaim_attached())
        log.info("%s(%s): range %s, %s, status %s", self.alloc.our_name, launch.nickname,
                 self.alloc.universe, self.mode, status.status(self.alloc))

    async def _restore(self, alloc: Allocator) -> Allocator:
        snapshot = await asyncio.to_thread(self.store.load)
        if alloc.restore(snapshot):
            log.info("restored the ring (%d entries) and %d owned addresses", len(alloc.ring.entries),
                     len(alloc.owned.all_cidrs()))
        elif snapshot is not None:
            log.warning("discarding persisted IPAM data written for peer %s, range %s (we are %s, %s)",
                        snapshot.get("peer_name"), snapshot.get("range"), alloc.our_name, alloc.universe)
            await asyncio.to_thread(self.store.clear)
        return alloc

    async def stop(self) -> None:
        """Answer every waiting request ("cancelled"; the bus lets their handlers reply before
        it closes), save, then end the tasks."""
        self.stopping = True
        for rid in list(self._waiting):
            self.apply(self.alloc.cancel(rid, now=self.now()))
        await self._save(self._dirty)
        await self.channel.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        async with self._save_lock:  # gossip may still arrive until the bus closes: not saved
            self._closed = True
            await asyncio.to_thread(self.store.close)

    def health(self) -> tuple[bool, str]:
        if self.alloc is None:
            return False, "starting"
        if self._save_error:
            return False, f"cannot save IPAM state: {self._save_error}"
        return True, status.status(self.alloc)

    def now(self) -> float:
        """Unix seconds that never go back: the wall clock at start plus monotonic time since.
        (The core's `now` also travels in gossip as Weave's Unix `Now`.)"""
        wall0, mono0 = self._clock0
        return wall0 + (self.ctx.clock.monotonic() - mono0)

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- requests ------------------------------------------------------------------------
    # Each waits up to `wait_s` for the core's reply and returns its result; raises the
    # core's RequestError, or WeaveError("unavailable") when the wait ran out (the pending
    # operation is then cancelled: nothing stays behind) or we stop or left. `what` names
    # the request in that error.
    async def allocate(self, ident: str, subnet: str | None = None, is_container: bool = True, *,
                       wait_s: float, what: str) -> CIDR:
        return await self._request(partial(self.alloc.allocate, ident=ident, subnet=subnet,
                                           is_container=is_container), wait_s, what)

    async def claim(self, ident: str, cidr: str, is_container: bool = True, *, no_error_on_unknown: bool = False,
                    wait_s: float, what: str) -> None:
        await self._request(partial(self.alloc.claim, ident=ident, cidr=cidr, is_container=is_container,
                                    no_error_on_unknown=no_error_on_unknown), wait_s, what)

    async def prime(self, *, wait_s: float, what: str) -> None:
        await self._request(self.alloc.prime, wait_s, what)

    async def release(self, ident: str, addr: str, *, wait_s: float, what: str) -> None:
        await self._request(partial(self.alloc.release, ident=ident, addr=addr), wait_s, what)

    async def delete(self, ident: str, *, wait_s: float, what: str) -> None:
        await self._request(partial(self.alloc.delete, ident=ident), wait_s, what)

    async def rmpeer(self, peer: str, *, wait_s: float, what: str) -> int:
        """Returns how many addresses we took over."""
        return await self._request(partial(self.alloc.rmpeer, peer=peer), wait_s, what)

    async def _request(self, start: Callable[..., list[Action]], wait_s: float, what: str) -> Any:
        """Start the core's request (`start(request_id, now=)`) and wait for its Reply."""
        if self.stopping or self.left:
            why = "the ipam service is stopping" if self.stopping else \
                "this peer has left IP allocation (DELETE /peer); relaunch it to allocate again"
            raise WeaveError(why, code="unavailable")
        rid = next(self._ids)
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._waiting[rid] = future
        try:
            self.apply(start(rid, now=self.now()))
            async with asyncio.timeout(wait_s):
                reply = await future
        except TimeoutError:
            self.apply(self.alloc.cancel(rid, now=self.now()))
            raise WeaveError(f"{what}: no answer within {wait_s:g} s; IPAM status: {status.status(self.alloc)}",
                             code="unavailable") from None
        finally:
            self._waiting.pop(rid, None)
        if reply.error is not None:
            raise reply.error
        return reply.result

    def leave(self) -> None:
        """DELETE /peer: hand every range to an heir and serve no more requests."""
        self.left = True
        self.apply(self.alloc.shutdown(now=self.now()))

    # -- actions -------------------------------------------------------------------------
    def apply(self, actions: list[Action]) -> None:
        replies = []
        for action in actions:
            if isinstance(action, Reply):
                replies.append(action)
            elif isinstance(action, Broadcast):
                self.channel.broadcast(codec.encode_gossip(action.state))
            elif isinstance(action, SendUnicast):
                self.channel.unicast(action.dest, codec.encode_unicast(action.message))
            elif isinstance(action, Persist):
                self._dirty += 1
                self._spawn(self._save(self._dirty))
        if replies and self._saved < self._dirty:
            self._spawn(self._resolve_after_save(replies, self._dirty))
        else:
            self._resolve(replies)
        if self.alloc.next_deadline() != self._armed:
            self._wake.set()

    def _resolve(self, replies: list[Reply]) -> None:
        for reply in replies:
            future = self._waiting.get(reply.request_id)
            if future is not None and not future.done():
                future.set_result(reply)

    async def _resolve_after_save(self, replies: list[Reply], generation: int) -> None:
        await self._save(generation)
        self._resolve(replies)

    async def _save(self, generation: int) -> None:
        """Write the current snapshot unless one at least as new as `generation` is
        written; concurrent callers queue on the lock, and the next write covers them all."""
        async with self._save_lock:
            if self._saved >= generation or self._closed:
                return
            target, delta = self._dirty, self.alloc.take_delta()
            try:
                await asyncio.to_thread(self.store.save, delta)
                self._save_error = ""
            except (sqlite3.Error, OSError) as exc:
                log.error("cannot save IPAM state to %s: %s", self.store.path, exc)
                self._save_error = str(exc)
                self.alloc.delta_not_saved(delta)  # written with the next save
            self._saved = target

    # -- timers --------------------------------------------------------------------------
    async def _timer_loop(self) -> None:
        """Sleep until the core's deadline (woken early if an input moved it), then tick."""
        while True:
            self._armed = deadline = self.alloc.next_deadline()
            await sleep_or_wake(self._wake, None if deadline is None else deadline - self.now())
            self.apply(self.alloc.tick(now=self.now()))

    # -- mesh (the ChannelOwner of IPallocation) ------------------------------------------
    def gossip(self) -> list[bytes]:
        return [self.alloc.gossip(self.now())]

    async def on_gossip(self, payload: bytes) -> None:
        self._merge("gossip", UNKNOWN_PEER_NAME, lambda: self.alloc.on_gossip(payload, now=self.now()))

    async def on_gossip_broadcast(self, src: PeerName, payload: bytes) -> None:
        self._merge("broadcast", src, lambda: self.alloc.on_gossip_broadcast(src, payload, now=self.now()))

    async def on_gossip_unicast(self, src: PeerName, payload: bytes) -> None:
        self._merge("unicast", src, lambda: self.alloc.on_gossip_unicast(src, payload, now=self.now()))

    def _merge(self, kind: str, src: PeerName, merge: Callable[[], list[Action]]) -> None:
        try:
            actions = merge()
        except (WeaveError, ValueError) as exc:  # RingError, RemoteProtocolError
            self._refuse(kind, src, str(exc))
            return
        self.apply(actions)

    def _refuse(self, kind: str, src: PeerName, reason: str) -> None:
        self.refused = f"{kind} from {src}: {reason}"
        last_at, last = self._refused_logged
        if reason != last or self.now() - last_at > REFUSED_LOG_INTERVAL_S:
            log.error("refused IPAM %s: %s", self.refused, "nothing changed")
            self._refused_logged = (self.now(), reason)

    async def on_topology(self, event: TopologyEvent) -> None:
        me = self.alloc.our_name
        known = [p.name for p in event.peers if p.reachable and p.name != me]
        nicknames = {p.name: p.nickname for p in event.peers}
        self.apply(self.alloc.set_peers(known, nicknames, now=self.now()))

    # -- containers (from the datapath) -----------------------------------------------------
    async def _on_container(self, msg: BusMsg) -> None:
        event = ContainerEvent.model_validate_json(msg.data)
        if event.kind == "detached":
            self.apply(self.alloc.container_died(event.container_id, now=self.now()))
        else:
            self._reclaim(event)

    def _reclaim(self, event: ContainerEvent) -> None:
        """Under the ident that holds them: the container's, or `_` (each address under
        itself) for a Docker plugin container's, which are Docker's to release."""
        ident = event.ipam_ident or event.container_id
        for cidr in event.cidrs:
            self._spawn(self._claim_quietly(ident, cidr, ident not in (EXPOSE_IDENT, NO_CONTAINER_ID)))

    async def _claim_quietly(self, ident: str, cidr: str, is_container: bool) -> None:
        try:
            await self.claim(ident, cidr, is_container, no_error_on_unknown=True, wait_s=RECLAIM_WAIT_S,
                             what=f"re-claim of {cidr} for {ident}")
        except WeaveError as exc:
            log.warning("cannot re-claim %s for attached container %s: %s", cidr, ident, exc.message)

    async def _reclaim_attached(self) -> None:
        """At start, claim the addresses of containers the datapath has attached (Weave's
        reclaim at start): our database may be older than they are, or gone. The datapath
        may be starting too: ask again, backing off, for about half a minute."""
        for delay in RECLAIM_RETRIES_S:
            await asyncio.sleep(delay)
            try:
                reply = await self.ctx.bus.request(subjects.request("datapath", "containers"), ContainersRequest(),
                                                   ContainersReply, timeout=2.0)
            except BusError as exc:
                why = exc.description
                continue
            for event in reply.containers:
                self._reclaim(event)
            return
        log.info("no attached containers to re-claim (datapath: %s)", why)


def main() -> None:
    run_service("ipam", IpamApp)


if __name__ == "__main__":
    main()
