"""The `dns` service (asyncio shell): weaveDNS with entries gossiped on the mesh.

Wires the sans-I/O `Nameserver` store and `QueryHandler` to:
- the mesh, through `OwnedChannel` (shared/mesh_channel.py) on Weave's `nameserver`
  channel: every add and tombstone is broadcast (tag 6, as Weave); the library sends
  the full state to random neighbours every `gossip_interval_s` and down the
  connection to every new neighbour; received gossip is merged, and our own entries
  that it contradicts are re-asserted and broadcast. Topology events keep the set of
  known peers (entries of unknown or departed peers are dropped);
- the DNS listeners (`server.py`), answering from this process's store;
- the bus (`weave.dns.add|remove|lookup|list`), Weave's HTTP routes (`http.py`) and
  container events from the datapath (attached with a name -> add; detached ->
  tombstone the container's entries, as Weave does on a Docker `die`);
- the journal and snapshot in the state dir (`snapshot.py`): every local change is
  journaled (appended and fsynced, grouped across concurrent callers) before it is
  acknowledged or broadcast, and the store is restored from them before this process
  takes part in gossip; see that module for what is restored when;
- one timer: tombstone purge (30 min after deletion) and snapshot writes (which
  compact the journal), whichever is due first.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
from ipaddress import IPv4Interface
from pathlib import Path

from shared.prom import GaugeMetricFamily

from services.dns import codec, snapshot
from services.dns.config import DnsConfig
from services.dns.entry import DnsEntry, GossipData
from services.dns.http import api_router
from shared.weave.dns_names import BadAddress, BadName, check_fqdn, parse_ipv4
from services.dns.nameserver import Nameserver, fqdn
from services.dns.query import QueryHandler
from services.dns.server import DnsServer, ResolvConf, UpstreamClient
from services.dns.status import local_entry_count
from shared.weave.peer_name import UNKNOWN_PEER_NAME, PeerName
from shared import subjects
from shared.clock import sleep_or_wake
from shared.bus import BusError, BusMsg
from shared.durable import Journal, JournalWriter, write_atomic
from shared.errors import RemoteProtocolError, WeaveError
from shared.http_bus import serve_http
from shared.mesh_channel import OwnedChannel
from shared.schemas.datapath import ContainerEvent, ContainersReply, ContainersRequest
from shared.schemas.dns import (AddRequest, ChangeReply, DnsEntryInfo, ListReply, ListRequest, LookupReply,
                                LookupRequest, RemoveRequest)
from shared.schemas.mesh import DNS_CHANNEL, TopologyEvent
from shared.service import ServiceContext, run_service

log = logging.getLogger("weave.dns")
PURGE_RECHECK_S = 60.0  # the purge deadline is recomputed at least this often


def incarnation_of(pid: int, proc: Path = Path("/proc")) -> str:
    """Identity of one run of process `pid` (the host's supervisor, our parent): its pid
    and kernel start time, so a new run, even with a recycled pid, differs."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
        start = stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        start = "?"
    return f"{pid}:{start}"


class DnsApp:
    def __init__(self, config: DnsConfig | None = None, incarnation: str | None = None,
                 rng: random.Random | None = None, journal: Journal | None = None) -> None:
        """`config` None: built at start from the launch config and the service's
        settings (ServiceConfig.settings). `incarnation` None: our parent's (the supervisor's) run.
        `journal` None: `dns-journal.jsonl` in the state dir (tests pass one that crashes)."""
        self._config = config
        self._journal = journal
        if incarnation is None:  # the supervisor says which run this is; else our parent (the supervisor)
            incarnation = os.environ.get("WEAVE_INCARNATION") or incarnation_of(os.getppid())
        self.incarnation = incarnation
        self.rng = rng or random.Random()
        self._tasks: set[asyncio.Task] = set()
        self._wake = asyncio.Event()
        self._dirty = False
        self.server: DnsServer | None = None
        self.channel: OwnedChannel | None = None
        self.writer: JournalWriter | None = None
        self.bound: set[str] = set()
        """Containers whose names we hold because they were attached (snapshot.py)."""
        self._seq = 0
        """Sequence number of the last journal record queued."""

    # -- life cycle --------------------------------------------------------------------
    async def start(self, ctx: ServiceContext) -> None:
        self.ctx, self.clock, launch = ctx, ctx.clock, ctx.config.launch
        self.config = self._config or DnsConfig.from_launch(launch, ctx.config.settings)
        settings = self.config.settings
        self.our_name = PeerName.parse(launch.name)
        self.ns = Nameserver(self.our_name, self.config.domain, tombstone_timeout_s=int(settings.tombstone_timeout_s))
        self.snapshot_path = launch.state_dir / snapshot.FILE_NAME
        self.writer = JournalWriter(self._journal or Journal(launch.state_dir / snapshot.JOURNAL_NAME))
        await self._restore()
        self.writer.start()
        await self._compact()  # the files now hold exactly what was restored, for this run
        exclude = self.config.listen_host if self.config.listen_host != "0.0.0.0" else None
        self.resolv = ResolvConf(settings.resolv_conf, exclude, self.clock.monotonic, settings.upstream_port)
        await self.resolv.addresses()  # read resolv.conf once now, so /status shows it
        upstream = UpstreamClient(self.resolv.addresses, timeout_s=settings.upstream_timeout_s,
                                  udp_size=settings.upstream_udp_size, max_inflight=settings.max_forwards)
        self.server = DnsServer(QueryHandler(self.ns, ttl=self.config.ttl_s, rng=self.rng), upstream,
                                self.config)
        await self.server.start()
        ctx.registry.register(_EntriesCollector(self))
        self.channel = OwnedChannel(ctx.bus, DNS_CHANNEL, self, settings.gossip_interval_s)
        await self._serve_bus()
        await self.channel.start()
        self._spawn(self._timer_loop())
        self._spawn(self._register_attached())

    async def stop(self) -> None:
        if self.channel is not None:
            await self.channel.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.server is not None:
            await self.server.stop()
        if self.writer is not None and self.writer.running:
            try:
                await self._compact()
            except OSError as exc:
                log.warning("cannot write %s at stop: %s", self.snapshot_path, exc)
            await self.writer.stop()

    def health(self) -> tuple[bool, str]:
        if self.server is None:
            return False, "starting"
        return True, f"{len(self.ns)} entries; DNS on {self.config.listen_host}:{self.server.port}"

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve_bus(self) -> None:
        bus = self.ctx.bus
        await bus.serve(subjects.request("dns", "add"), AddRequest, self._on_add)
        await bus.serve(subjects.request("dns", "remove"), RemoveRequest, self._on_remove)
        await bus.serve(subjects.request("dns", "lookup"), LookupRequest, self._on_lookup)
        await bus.serve(subjects.request("dns", "list"), ListRequest, self._on_list)
        await serve_http(bus, "dns", api_router(self))
        await bus.subscribe(subjects.event("containers"), self._on_container_event)

    # -- local changes (we are the origin) ----------------------------------------------
    async def add(self, container_id: str, addrs: int | tuple[int, ...], name: str, *,
                  bind: bool = False) -> tuple[DnsEntry, ...]:
        """Register (or revive) our entries for `name` at each address, durably, then
        broadcast them; () if the name lies outside our domain (ignored, as Weave).
        `bind`: the container is attached (its names go when it does). Raises WeaveError
        `not_saved` when the journal cannot be written (nothing acknowledged then)."""
        changed: list[DnsEntry] = []
        for addr in (addrs,) if isinstance(addrs, int) else addrs:
            data = self.ns.add_fqdn(name, container_id, addr, self.clock.now())
            if data is None:
                log.info("ignoring %s -> %s (%s): not in domain %s", name, _ip(addr), container_id, self.ns.domain)
                return ()
            log.info("adding %s -> %s (%s)", name, _ip(addr), container_id)
            changed += data.entries
        await self._commit(changed, bind=(container_id,) if bind and container_id not in self.bound else ())
        return tuple(changed)

    async def remove(self, *, hostname: str | None = None, container_id: str | None = None,
                     addr: int | None = None, unbind: bool = False) -> tuple[DnsEntry, ...]:
        """Tombstone our live entries matching every given field, durably, then
        broadcast them. `unbind`: the container is gone (no longer bound, snapshot.py)."""
        data = self.ns.delete(self.clock.now(), hostname=hostname, container_id=container_id, addr=addr)
        done = data.entries if data is not None else ()
        for e in done:
            log.info("tombstoning %s -> %s (%s)", e.hostname, e.address, e.container_id)
        release = (container_id,) if unbind and container_id in self.bound else ()
        if done or release:
            await self._commit(list(done), unbind=release)
        return done

    async def bind(self, container_id: str) -> None:
        if container_id not in self.bound:
            await self._commit([], bind=(container_id,))

    async def _commit(self, entries: list[DnsEntry], bind: tuple[str, ...] = (),
                      unbind: tuple[str, ...] = ()) -> None:
        """Journal a local change (durable when this returns), then broadcast it. The
        record is queued before the first await, so records are on disk in the order of
        the changes in memory."""
        self._seq += 1
        self.bound |= set(bind)
        self.bound -= set(unbind)
        rec = snapshot.Record(self._seq, self.incarnation, tuple(entries), bind, unbind)
        saved = self.writer.append([snapshot.record_json(rec)])
        self._mark_dirty()
        try:
            await saved
        except OSError as exc:
            log.error("cannot journal a dns change to %s: %s", self.writer.journal.path, exc)
            raise WeaveError(f"cannot save the change to disk: {exc}", code="not_saved") from None
        if entries:
            self.channel.broadcast(codec.encode(GossipData.of(self.clock.now(), entries)))

    async def container_alive(self, container_id: str) -> bool | None:
        """Whether the datapath has the container attached; None when it cannot say."""
        try:
            reply = await self.ctx.bus.request(subjects.request("datapath", "containers"), ContainersRequest(),
                                               ContainersReply, timeout=2.0)
        except BusError:
            return None
        return any(c.container_id == container_id for c in reply.containers)

    # -- gossip and topology (the ChannelOwner of nameserver) -----------------------------
    def gossip(self) -> list[bytes]:
        return [codec.encode(self.ns.gossip(self.clock.now()))]

    async def on_gossip(self, payload: bytes) -> None:
        self._merge("gossip", UNKNOWN_PEER_NAME, payload)

    async def on_gossip_broadcast(self, src: PeerName, payload: bytes) -> None:
        self._merge("broadcast", src, payload)

    async def on_gossip_unicast(self, src: PeerName, payload: bytes) -> None:
        """Weave's OnGossipUnicast ignores them."""

    def _merge(self, kind: str, src: PeerName, payload: bytes) -> None:
        try:
            outcome = self.ns.on_gossip(codec.decode(payload, known=self.ns.get), self.clock.now())
        except RemoteProtocolError as exc:
            log.warning("dropping nameserver %s from %s: %s", kind, src, exc)
            return
        if outcome.broadcast is not None:
            log.info("re-asserting %d entries of ours that gossip contradicted", len(outcome.broadcast.entries))
            self.channel.broadcast(codec.encode(outcome.broadcast))
        if outcome.new is not None or outcome.broadcast is not None:
            self._mark_dirty()

    async def on_topology(self, event: TopologyEvent) -> None:
        dropped = self.ns.set_known_peers(p.name for p in event.peers)
        for name in event.removed:
            dropped += self.ns.peer_gone(name)
        if dropped:
            log.info("dropped %d entries of peers that left", dropped)
            self._mark_dirty()

    # -- timer ---------------------------------------------------------------------------
    async def _timer_loop(self) -> None:
        """Tombstone purge and snapshot writes, whichever comes first. Changes wake it
        at most once per snapshot write (see `_mark_dirty`)."""
        next_write = 0.0
        while True:
            now = self.clock.monotonic()
            deadline = min(now + self._purge_delay(), max(next_write, now) if self._dirty else float("inf"))
            await sleep_or_wake(self._wake, deadline - now)
            try:
                next_write = await self._tick(next_write)
            except Exception:  # a bug in one tick must not stop the purge and the writes for good
                log.exception("dns timer tick failed")
                await asyncio.sleep(1.0)

    async def _tick(self, next_write: float) -> float:
        """Do what is due; returns when the snapshot may next be written."""
        now = self.clock.monotonic()
        due = self.ns.next_deadline()
        if due is not None and self.clock.now() >= due and self.ns.delete_tombstones(self.clock.now()):
            self._dirty = True
        if self._dirty and now >= next_write:
            self._dirty = False
            next_write = now + self.config.settings.snapshot_delay_s
            try:
                await self._compact()
            except OSError as exc:
                log.warning("cannot write %s: %s", self.snapshot_path, exc)
                self._dirty = True
        return next_write

    def _purge_delay(self) -> float:
        due = self.ns.next_deadline()
        return PURGE_RECHECK_S if due is None else min(PURGE_RECHECK_S, max(0.0, due - self.clock.now()))

    def _mark_dirty(self) -> None:
        """The store changed: a snapshot write is due (one wake-up per pending write)."""
        if not self._dirty:
            self._dirty = True
            self._wake.set()

    # -- snapshot and journal --------------------------------------------------------------
    def _snapshot(self) -> snapshot.Snapshot:
        return snapshot.Snapshot(self.incarnation, self.clock.now(), self.ns.unordered(), self._seq,
                                 frozenset(self.bound))

    async def _compact(self) -> None:
        """Write the whole store, then empty the journal, in the journal's order: the
        snapshot holds every change queued before it (raises OSError)."""
        snap = self._snapshot()

        def write() -> None:
            write_atomic(self.snapshot_path, snapshot.dump_chunks(snap), 0o600)
            self.writer.journal.reset()
        await self.writer.call(write)

    async def _restore(self) -> None:
        snap = None
        try:
            snap = snapshot.loads(await asyncio.to_thread(self.snapshot_path.read_bytes))
        except FileNotFoundError:
            pass
        except (OSError, WeaveError) as exc:
            log.warning("ignoring %s: %s", self.snapshot_path, exc)
        records = await asyncio.to_thread(self.writer.journal.read)
        got = snapshot.restore(snap, records, our_name=self.our_name, incarnation=self.incarnation,
                               now=self.clock.now(), fresh_for_s=self.config.settings.tombstone_timeout_s / 2)
        self.ns.merge(got.entries)
        self.bound, self._seq = got.bound, got.last_seq
        log.info("restored %d entries (%d snapshot, %d journal records) and %d bound containers",
                 len(got.entries), len(snap.entries) if snap else 0, len(records), len(got.bound))

    async def _register_attached(self) -> None:
        """Names of containers attached now (Weave's populateDNS at weaver start); the
        datapath may not be up: then its events will tell us later."""
        try:
            reply = await self.ctx.bus.request(subjects.request("datapath", "containers"), ContainersRequest(),
                                               ContainersReply, timeout=5.0)
        except BusError as exc:
            log.info("no attached containers from the datapath (%s)", exc.code)
            return
        for event in reply.containers:
            await self._apply_container_event(event)
        attached = {c.container_id for c in reply.containers}
        for gone in sorted(self.bound - attached):  # detached while we were down
            log.info("container %s was detached while dns was down: removing its names", gone)
            await self.remove(container_id=gone, unbind=True)

    # -- bus handlers --------------------------------------------------------------------
    async def _on_container_event(self, msg: BusMsg) -> None:
        try:
            event = ContainerEvent.model_validate_json(msg.data)
        except ValueError as exc:
            log.warning("malformed container event: %s", exc)
            return
        await self._apply_container_event(event)

    async def _apply_container_event(self, event: ContainerEvent) -> None:
        if event.kind == "detached":
            await self.remove(container_id=event.container_id, unbind=True)
            return
        if not event.fqdn:
            return
        try:
            name = check_fqdn(event.fqdn)
        except BadName as exc:
            log.warning("container %s: not registering its name: %s", event.container_id, exc)
            return
        addrs = []
        for cidr in event.cidrs:
            try:
                addrs.append(int(IPv4Interface(cidr).ip))
            except ValueError:
                log.warning("container %s: ignoring address %r (not IPv4)", event.container_id, cidr)
        if addrs:
            try:
                await self.add(event.container_id, tuple(addrs), name, bind=True)
            except WeaveError as exc:
                log.error("container %s: name %s not registered: %s", event.container_id, name, exc)

    async def _on_add(self, req: AddRequest) -> ChangeReply:
        try:
            addr, name = parse_ipv4(req.ip), check_fqdn(req.fqdn)
        except (BadAddress, BadName) as exc:
            raise WeaveError(str(exc), code="bad_request") from None
        return ChangeReply(entries=_wire(await self.add(req.container_id, addr, name)))

    async def _on_remove(self, req: RemoveRequest) -> ChangeReply:
        try:
            addr = parse_ipv4(req.ip) if req.ip is not None else None
        except BadAddress as exc:
            raise WeaveError(str(exc), code="bad_request") from None
        done = await self.remove(hostname=fqdn(req.fqdn) if req.fqdn else None, container_id=req.container_id,
                                 addr=addr)
        return ChangeReply(entries=_wire(done))

    async def _on_lookup(self, req: LookupRequest) -> LookupReply:
        name = fqdn(req.name)
        if name.count(".") == 1 and name != ".":
            name += self.ns.domain
        return LookupReply(name=name, addresses=tuple(_ip(a) for a in self.ns.lookup(name)))

    async def _on_list(self, req: ListRequest) -> ListReply:
        entries = [e for e in self.ns.entries() if req.tombstones or e.live]
        return ListReply(domain=self.ns.domain, entries=_wire(entries))

    def upstream_servers(self) -> tuple[str, ...]:
        return self.resolv.servers


class _EntriesCollector:
    """weave_dns_entries, as Weave: live entries this peer registered."""

    def __init__(self, app: DnsApp) -> None:
        self.app = app

    def collect(self):
        gauge = GaugeMetricFamily("weave_dns_entries", "Number of DNS entries.")
        gauge.add_metric([], local_entry_count(self.app.ns.entries(), self.app.our_name))
        yield gauge


def _ip(addr: int) -> str:
    return ".".join(str((addr >> s) & 0xFF) for s in (24, 16, 8, 0))


def _wire(entries) -> tuple[DnsEntryInfo, ...]:
    return tuple(DnsEntryInfo(hostname=e.hostname, origin=e.origin, container_id=e.container_id,
                          address=e.address, version=e.version, tombstone=e.tombstone) for e in entries)


def main() -> None:
    run_service("dns", DnsApp)


if __name__ == "__main__":
    main()
