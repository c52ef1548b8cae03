"""The `npc` service: Kubernetes NetworkPolicy enforced with iptables and ipsets (asyncio shell).

Inputs, each turned into store entries or objects and handed to the compiler:
- `weave policy apply|delete` (weave.npc.*): NetworkPolicy and Namespace objects,
  admitted all or nothing (admission.py), written to the gossiped store (sources.py);
- gossip on `weave-py-policy` through OwnedChannel (shared/mesh_channel.py): other
  hosts' policies and their pods (broadcast on change; the library sends the full
  store every gossip interval, down to each new neighbour, and by unicast in answer
  to a pull, PULL, which it sends to each new neighbour: a restarted npc so gets
  every neighbour's store at once);
- `weave.events.containers`: this host's containers, which become pods everywhere;
- optionally the Kubernetes API (kube.py).
Output: the Enforcer keeps netfilter at the compiler's desired state (apply.py), and
the NFLOG reader logs and counts what it drops (nflog.py) and keeps the recent attempts
for `weave.npc.blocked` (blocked_log.py). The store is kept in the
state dir, so a restarted npc enforces what it enforced before it hears from anyone.
The FORWARD/INPUT hooks are installed here (weaver's job in Weave Net); rules stay in
place when the service stops, so a host without its npc fails closed, as with Weave.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from shared.prom import Counter, Metric
from pydantic import ValidationError

from shared import subjects
from shared.bus import BusError, BusMsg
from shared.config import NpcSettings
from shared.errors import RemoteProtocolError, WeaveError
from shared.http import HttpRouter
from shared.http_bus import serve_http
from shared.mesh_channel import OwnedChannel
from shared.schemas.datapath import ContainerEvent, ContainersReply, ContainersRequest
from shared.schemas.mesh import POLICY_CHANNEL, TopologyEvent
from shared.schemas.npc import (ApplyReply, ApplyRequest, BlockedReply, BlockedRequest, DeleteReply, DeleteRequest,
                                ListReply, ListRequest, ObjectRef, PolicyInfo, StatusReply, StatusRequest)
from shared.service import ServiceContext, run_service
from shared.weave.peer_name import UNKNOWN_PEER_NAME, PeerName

from . import status
from .admission import AdmissionRefused, admit
from .apply import Backend, Enforcer, EnforcerConfig, Netfilter, Runner, state_counts
from .blocked_log import BlockedLog
from .chains import NFLOG_GROUP
from .model import Namespace, NetworkPolicy
from .nflog import Blocked, NflogSocket, blocked_connection
from .policy import NetworkPolicyController, NPCConfig
from .sources import (POD, POLICY, PULL, StoreEntry, PolicySources, decode, encode_chunks, namespace_key, policy_key,
                      split_key)
from .store_file import STORE_FILE, StoreFile
from .world import World, objects_of

log = logging.getLogger("weave.npc")
ENFORCE_WAIT_S = 5.0  # how long apply/delete wait for this host's kernel before replying
BRIDGE_NF_SYSCTL = "/proc/sys/net/bridge/bridge-nf-call-iptables"


class NpcApp:
    def __init__(self, settings: NpcSettings | None = None, runner: Runner | None = None) -> None:
        """`settings` None: the service's (ServiceConfig.settings). `runner`: a twin of
        iptables/ipset (memory_netfilter.MemoryKernel.run) for tests; with one, the
        host's sysctls and NFLOG are left alone."""
        self._settings = settings
        self._runner = runner
        self._tasks: set[asyncio.Task] = set()
        self._nflog: NflogSocket | None = None
        self.channel: OwnedChannel | None = None
        self.blocked_total = 0
        self.blocked_log = BlockedLog()
        self.enforcer: Enforcer | None = None

    # -- life cycle ----------------------------------------------------------------------
    async def start(self, ctx: ServiceContext) -> None:
        self.ctx, launch = ctx, ctx.config.launch
        self.settings = settings = self._settings or ctx.config.settings
        self.controller = NetworkPolicyController(NPCConfig(allow_mcast=settings.allow_mcast))
        self.world = World(self.controller)
        self.sources = PolicySources(PeerName.parse(launch.name) if launch.name else UNKNOWN_PEER_NAME)
        self.store = StoreFile(Path(launch.state_dir) / STORE_FILE, self.sources, settings.persist_delay_s)
        self.channel = OwnedChannel(ctx.bus, POLICY_CHANNEL, self, settings.gossip_interval_s, pull=PULL)
        self._ingest(self.store.load())
        backend = Backend(settings.iptables_backend) if settings.iptables_backend else None
        if self._runner is None:
            await asyncio.to_thread(_ensure_bridge_nf)
            netfilter = await asyncio.to_thread(Netfilter, backend)
        else:
            netfilter = Netfilter(backend or Backend.NFT, run=self._runner)
        self.enforcer = Enforcer(netfilter, self.controller.desired_state,
                                 EnforcerConfig(settings.resync_s, settings.retry_initial_s, settings.retry_max_s))
        self._register_metrics(ctx)
        bus = ctx.bus
        await bus.serve(subjects.request("npc", "apply"), ApplyRequest, self._on_apply)
        await bus.serve(subjects.request("npc", "delete"), DeleteRequest, self._on_delete)
        await bus.serve(subjects.request("npc", "list"), ListRequest, self._on_list)
        await bus.serve(subjects.request("npc", "status"), StatusRequest, self._on_status)
        await bus.serve(subjects.request("npc", "blocked"), BlockedRequest, self._on_blocked_request)
        await bus.subscribe(subjects.event("containers"), self._on_container)
        await serve_http(bus, "npc", self._router())
        self._spawn(self.enforcer.run())
        self._spawn(self.store.run())
        if self._runner is None:
            self._spawn(self._nflog_loop())
        await self.channel.start()
        if not self.settings.kube_api:
            self._spawn(self._container_snapshot())
        else:
            from .kube import KubeSource  # the Kubernetes client only where there is an API server (issue 15)

            self.kube = KubeSource(self.settings, self._on_kube)
            self._spawn(self.kube.run())
        log.info("npc started as %s: iptables-%s, %d stored objects, %d pods", self.sources.ourself,
                 netfilter.backend.value, len(self.sources.state.entries), len(self.world.pods()))

    async def stop(self) -> None:
        if self.channel is not None:
            await self.channel.stop()
        for task in list(self._tasks):
            task.cancel()
        if self._nflog is not None:
            self._nflog.close()
        await asyncio.to_thread(self.store.write, self.store.take())

    def health(self) -> tuple[bool, str]:
        e = self.enforcer
        if e is None or (e.applied == 0 and e.errors == 0):
            return False, "starting"
        if not e.synced:
            return False, f"netfilter not in sync ({e.errors} errors)"
        return True, f"{len(self.world.policies())} policies, {len(self.world.pods())} pods enforced"

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the store: entries -> compiler -------------------------------------------------------
    def _ingest(self, entries: list[StoreEntry]) -> None:
        """Hand changed store entries to the compiler; log what it refuses."""
        for entry in entries:
            try:
                objects = objects_of(entry)
            except RemoteProtocolError as exc:
                log.warning("ignoring %s (version %d from %s): %s", entry.key, entry.version, entry.origin,
                            exc.message)
                objects = []
            for rejection in self.world.put(entry.key, objects):
                log.warning("network policy %s/%s rejected: %s", rejection.attrs.get("namespace"),
                            rejection.attrs.get("name"), rejection.message)
        if entries:
            self.store.changed()
            if self.enforcer is not None:
                self.enforcer.kick()

    async def _commit(self, entries: list[StoreEntry], durable: bool = False) -> None:
        """Local writes: enforce here, tell every host. `durable`: the change will be
        acknowledged to a user, so it is on disk before anyone hears of it (raises
        WeaveError `not_saved` otherwise)."""
        self._ingest(entries)
        if durable and entries:
            try:
                await self.store.save()
            except OSError as exc:
                log.error("cannot save the policy store: %s", exc)
                raise WeaveError(f"cannot save the policy store to disk: {exc}", code="not_saved") from None
        self._broadcast(entries)

    def _broadcast(self, entries: list[StoreEntry]) -> None:
        for payload in encode_chunks(entries):
            self.channel.broadcast(payload)

    async def _wait_enforced(self) -> bool:
        try:
            async with asyncio.timeout(ENFORCE_WAIT_S):
                await self.enforcer.wait_applied()
            return True
        except TimeoutError:
            return False

    # -- bus API ------------------------------------------------------------------------------
    async def _on_apply(self, req: ApplyRequest) -> ApplyReply:
        try:
            items = admit(req.manifest, self.world.policies())
        except AdmissionRefused as exc:
            log.warning("weave policy apply refused: %s", exc.message)
            raise
        changed, unchanged, entries = [], [], []
        for item in items:
            entry = self.sources.put(item.key, item.value)
            (changed if entry else unchanged).append(item.ref)
            if entry:
                entries.append(entry)
                log.info("stored %s %s (version %d)", item.ref.kind, item.key, entry.version)
        await self._commit(entries, durable=True)
        return ApplyReply(changed=tuple(changed), unchanged=tuple(unchanged), enforced=await self._wait_enforced())

    async def _on_delete(self, req: DeleteRequest) -> DeleteReply:
        key = policy_key(req.namespace, req.name) if req.kind == POLICY else namespace_key(req.name)
        entry = self.sources.delete(key)
        if entry is None:
            raise WeaveError(f"no {req.kind} {key.split('/', 1)[1]} in the policy store", code="not_found")
        log.info("deleted %s (version %d)", key, entry.version)
        await self._commit([entry], durable=True)
        ref = ObjectRef(kind=req.kind, namespace=req.namespace if req.kind == POLICY else "", name=req.name)
        return DeleteReply(deleted=ref, enforced=await self._wait_enforced())

    async def _on_list(self, _: ListRequest) -> ListReply:
        return self.list_objects()

    async def _on_status(self, _: StatusRequest) -> StatusReply:
        return self.status()

    def list_objects(self) -> ListReply:
        rejected = self.controller.rejected
        infos = []
        for entry in self.sources.state.live():
            kind, middle, name = split_key(entry.key)
            if kind == POD:
                continue
            reason = rejected[entry.key].message if entry.key in rejected else ""
            if kind == POLICY and not self.world.get(entry.key):
                reason = "unreadable object"
            infos.append(PolicyInfo(ref=ObjectRef(kind=kind, namespace=middle, name=name), source="weave",
                                    origin=entry.origin, version=entry.version, enforced=not reason, reason=reason))
        infos += self._kube_infos(rejected)
        infos.sort(key=lambda i: (i.ref.kind, i.ref.namespace, i.ref.name, i.source))
        return ListReply(objects=tuple(infos))

    def _kube_infos(self, rejected) -> list[PolicyInfo]:
        infos = []
        for key, objs in self.world.items():
            if not key.startswith("kube/"):
                continue
            for obj in objs:
                if isinstance(obj, NetworkPolicy):
                    reason = rejected[obj.uid].message if obj.uid in rejected else ""
                    ref = ObjectRef(kind="NetworkPolicy", namespace=obj.namespace, name=obj.name)
                elif isinstance(obj, Namespace):
                    reason, ref = "", ObjectRef(kind="Namespace", name=obj.name)
                else:
                    continue
                infos.append(PolicyInfo(ref=ref, source="kubernetes", enforced=not reason, reason=reason))
        return infos

    def status(self) -> StatusReply:
        e = self.enforcer
        counts = state_counts(e.last_state if e else None)
        pods = self.world.pods()
        local = sum(1 for key, _ in pods if key.startswith(f"{POD}/{self.sources.ourself}/"))
        return StatusReply(
            policies=len(self.world.policies()), rejected=len(self.controller.rejected),
            namespaces=len(self.world.namespaces), pods=len(pods), local_pods=local, **counts,
            backend=e.netfilter.backend.value if e else "", synced=bool(e and e.synced),
            last_sync_unix=e.last_sync_unix if e else 0.0, enforcement_errors=e.errors if e else 0,
            blocked_connections=self.blocked_total)

    # -- HTTP (GET /status, /status/npc, /report; forwarded by the gossip service) ----------------
    def _router(self) -> HttpRouter:
        def pods() -> list[tuple[str, str, str, str]]:
            return sorted((p.namespace, p.metadata.name, p.ip, key.split("/")[1] if key.startswith(POD) else "k8s")
                          for key, p in self.world.pods())
        return status.router(self.status, self.list_objects, pods)

    # -- containers of this host ------------------------------------------------------------
    async def _on_container(self, msg: BusMsg) -> None:
        if self.settings.kube_api:
            return  # with Kubernetes, pods come from the API server (with their real labels)
        try:
            event = ContainerEvent.model_validate_json(msg.data)
        except ValidationError as exc:
            log.warning("dropping a malformed container event: %s", exc)
            return
        await self._commit(self.sources.container_event(event))

    async def _container_snapshot(self) -> None:
        """The datapath's list, once at start: containers detached while we were down go.
        (A datapath that does not answer leaves the stored pods as they were.)"""
        try:
            reply = await self.ctx.bus.request(subjects.request("datapath", "containers"), ContainersRequest(),
                                               ContainersReply, timeout=5.0)
        except BusError as exc:
            log.info("no container snapshot from the datapath (%s); keeping %d stored pods", exc.code,
                     len(self.sources.own_pods))
            return
        await self._commit(self.sources.container_snapshot(reply.containers))

    # -- gossip (the ChannelOwner of weave-py-policy) -------------------------------------------
    def gossip(self) -> list[bytes]:
        return encode_chunks(self.sources.state.entries.values())

    async def on_gossip(self, payload: bytes) -> None:
        self._merge(UNKNOWN_PEER_NAME, payload)

    async def on_gossip_broadcast(self, src: PeerName, payload: bytes) -> None:
        self._merge(src, payload)

    async def on_gossip_unicast(self, src: PeerName, payload: bytes) -> None:
        self._merge(src, payload)

    def _merge(self, src: PeerName, payload: bytes) -> None:
        try:
            entries = decode(payload)
        except RemoteProtocolError as exc:
            log.warning("dropping policy gossip from %s: %s", src, exc.message)
            return
        changed, corrections = self.sources.receive(entries)
        self._ingest(changed)
        if corrections:
            self._broadcast(corrections)

    async def on_topology(self, event: TopologyEvent) -> None:
        removed = event.removed
        if removed:
            await self._commit(self.sources.peers_removed(removed))

    # -- Kubernetes ----------------------------------------------------------------------------
    async def _on_kube(self, key: str, objects: list) -> None:
        for rejection in self.world.put(key, objects):
            log.warning("network policy %s/%s rejected: %s", rejection.attrs.get("namespace"),
                        rejection.attrs.get("name"), rejection.message)
        self.enforcer.kick()

    # -- blocked connections ----------------------------------------------------------------
    def _register_metrics(self, ctx: ServiceContext) -> None:
        self.blocked_metric = Counter("weavenpc_blocked_connections", "Connection attempts blocked by policy "
                                      "controller.", ["protocol", "dport"], registry=ctx.registry)
        ctx.registry.register(_EnforcementErrors(self))

    async def _nflog_loop(self) -> None:
        try:
            self._nflog = await asyncio.to_thread(NflogSocket, int(NFLOG_GROUP))
        except OSError as exc:
            log.warning("cannot read NFLOG group %s (%s): blocked connections will not be logged",
                        NFLOG_GROUP, exc)
            return
        while True:
            for packet in await self._nflog.receive():
                blocked = blocked_connection(packet.payload)
                if blocked is not None:
                    self._on_blocked(blocked)

    def _on_blocked(self, b: Blocked) -> None:
        self.blocked_total += 1
        self.blocked_log.add(b, self.ctx.clock.now())
        self.blocked_metric.labels(b.protocol, str(b.dport)).inc()
        log.warning("%s", b.log_line(self.world.describe(b.src), self.world.describe(b.dst)))

    async def _on_blocked_request(self, req: BlockedRequest) -> BlockedReply:
        log_ = self.blocked_log
        return BlockedReply(flows=log_.since(req.since_unix), total=log_.total, capacity=log_.capacity)


class _EnforcementErrors:
    """weavenpc_policy_enforcement_errors under Weave's exact name (a Counter here
    would be exposed as ..._total)."""

    def __init__(self, app: NpcApp) -> None:
        self.app = app

    def collect(self):
        metric = Metric("weavenpc_policy_enforcement_errors", "Errors occured in enforcing the network policies.",
                        "unknown")
        metric.add_sample("weavenpc_policy_enforcement_errors", {},
                          float(self.app.enforcer.errors if self.app.enforcer else 0))
        yield metric


def _ensure_bridge_nf() -> None:
    """Bridged frames must traverse iptables (weaver sets this when NPC is expected)."""
    try:
        with open(BRIDGE_NF_SYSCTL) as f:
            if f.read().strip() == "1":
                return
        with open(BRIDGE_NF_SYSCTL, "w") as f:
            f.write("1\n")
    except OSError as exc:
        log.warning("cannot enable %s (%s): policies will not see bridged traffic", BRIDGE_NF_SYSCTL, exc)


def main() -> None:
    run_service("npc", NpcApp)


if __name__ == "__main__":
    main()
