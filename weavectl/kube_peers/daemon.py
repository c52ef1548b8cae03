"""The asyncio shell of kube-peers (`weave kube-peers run`): the Kubernetes API through
lightkube, this host's services through its bus.

Tasks, each retrying on its own (no start order: the API server, the bus or a service
may come later or go away and come back):
- nodes: `shared.kube.reflect` of the Nodes -> NodeWatch -> gossip connect/forget; a
  deleted Node schedules a reclaim pass after a random delay (0..reclaim_delay_max_s);
- reclaim: runs `reclaim.Reclaim` passes (the first one also joins the peer list), at
  start, when scheduled, and every reclaim_interval_s; one at a time;
- readiness: every readiness_interval_s asks gossip for its topology and ipam for its
  status, keeps `readiness.readiness(...)`, and re-tells the router its targets if a
  tell failed; the first time it is ready, marks the Node's network available;
- prime: asks ipam for a ring until it has one (Weave's add-on gets one from
  `weave expose`), so that a node is ready before it runs a pod.
It answers `weave.kube-peers.http`: GET /status (its `weave status` section),
/status/kube-peers (200 ready / 503 and the reason: the readiness probe, through the
router's API port) and /report (a "KubePeers" object).
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from lightkube import ApiError, AsyncClient
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import ConfigMap, Node
from lightkube.types import PatchType

from shared import kube, subjects
from shared.bus import Bus, BusError
from shared.config import LaunchConfig
from shared.http import HttpRouter, Request, Response
from shared.http_bus import serve_http
from shared.schemas.base import Ok
from shared.schemas.ipam import PrimeRequest, RmpeerReply, RmpeerRequest, StatusReply, StatusRequest
from shared.schemas.mesh import ConnectRequest, ForgetRequest, PeersRequest, TopologyEvent

from . import KubePeersConfig
from . import peer_list as pl
from . import reclaim as rc
from .nodes import NodeWatch, TargetChange
from .readiness import Readiness, readiness

log = logging.getLogger("weave.kube-peers")
BUS_TIMEOUT_S = 5.0
STOP_GRACE_S = 2.0


class KubePeers:
    def __init__(self, config: KubePeersConfig, launch: LaunchConfig, bus: Bus, client: AsyncClient,
                 rng: random.Random | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.config, self.bus, self.client = config, bus, client
        self.me = (launch.name or "").lower()
        self.rng, self.clock = rng or random.Random(), clock
        self.nodes = NodeWatch(config.node_name)
        self.state = Readiness(False, "starting")
        self.reclaim_due = 0.0            # clock time of the next pass (at start: now)
        self._wake = asyncio.Event()
        self.registered = False
        self.passes: list[rc.Done] = []   # every pass's outcome, oldest first (bounded)
        self.reclaimed: list[tuple[str, float]] = []  # (peer, unix time) this host rmpeer'd
        self.router_stale = False         # a connect/forget failed: re-tell everything
        self.node_status_set = False
        self._cm: dict[str, Any] = {}     # the ConfigMap as last read
        self._tasks: list[asyncio.Task] = []

    # -- life cycle ------------------------------------------------------------------------
    async def start(self) -> None:
        await serve_http(self.bus, subjects.KUBE_PEERS, self.router())
        loop = asyncio.get_running_loop()
        for coro in (kube.reflect(self.client, Node, _NodeSink(self), resync_s=self.config.resync_s),
                     self._reclaim_loop(), self._readiness_loop(), self._prime()):
            self._tasks.append(loop.create_task(coro))
        log.info("kube-peers started for node %s, peer %s", self.config.node_name, self.me)

    async def stop(self) -> None:
        """Cancel every task and wait a moment for them (an HTTP stream being torn down may
        linger until the server ends it; the process is exiting anyway)."""
        for task in self._tasks:
            task.cancel()
        _, pending = await asyncio.wait(self._tasks, timeout=STOP_GRACE_S)
        if pending:
            log.info("%d task(s) still closing their API streams; leaving them", len(pending))

    # -- nodes -> router -------------------------------------------------------------------
    async def on_change(self, change: TargetChange) -> None:
        if change.deleted:
            delay = self.rng.uniform(0, self.config.reclaim_delay_max_s)
            log.info("node(s) %s deleted: reclaiming in %.1f s", ", ".join(change.deleted), delay)
            self.schedule_reclaim(self.clock() + delay)
        if change.connect or change.forget or change.replace:
            await self._tell_router(change)

    async def _tell_router(self, change: TargetChange) -> None:
        try:
            if change.connect or change.replace:
                await self.bus.request(subjects.request("gossip", "connect"),
                                       ConnectRequest(peers=change.connect, replace=change.replace), Ok,
                                       timeout=BUS_TIMEOUT_S)
            if change.forget:
                await self.bus.request(subjects.request("gossip", "forget"), ForgetRequest(peers=change.forget), Ok,
                                       timeout=BUS_TIMEOUT_S)
            log.info("router targets: +%s -%s%s", list(change.connect), list(change.forget),
                     " (replacing)" if change.replace else "")
        except BusError as exc:
            log.warning("cannot tell the router its targets (%s); will again", exc.description)
            self.router_stale = True

    # -- reclaim ---------------------------------------------------------------------------
    def schedule_reclaim(self, at: float) -> None:
        self.reclaim_due = min(self.reclaim_due, at)
        self._wake.set()

    async def _reclaim_loop(self) -> None:
        while True:
            wait = self.reclaim_due - self.clock()
            if wait > 0:
                self._wake.clear()
                try:
                    async with asyncio.timeout(wait):
                        await self._wake.wait()
                except TimeoutError:
                    pass
                continue
            self.reclaim_due = self.clock() + self.config.reclaim_interval_s
            done = await self.reclaim_pass()
            if done.error:  # not registered, or the API/ipam failed: try again soon
                self.reclaim_due = min(self.reclaim_due, self.clock() + 2 * self.config.retry_period_s)

    async def reclaim_pass(self) -> rc.Done:
        machine = rc.Reclaim(self.me, self.config.node_name, self.rng, register=not self.registered,
                             retry_period_s=self.config.retry_period_s)
        action = machine.start()
        while not isinstance(action, rc.Done):
            event = await self._perform(action)
            action = machine.handle(event, self.clock())
        if not action.error:
            self.registered = True
        else:
            log.warning("reclaim pass stopped: %s", action.error)
        for peer in action.reclaimed:
            self.reclaimed.append((peer, time.time()))
        self.passes = (self.passes + [action])[-20:]
        return action

    async def _perform(self, action: rc.Action) -> rc.Event:
        try:
            if isinstance(action, rc.ReadConfigMap):
                return self._read_event(await self._get_configmap())
            if isinstance(action, rc.ListNodes):
                names = frozenset([n.metadata.name async for n in self.client.list(Node)])
                return rc.NodesListed(names)
            if isinstance(action, rc.WriteConfigMap):
                return await self._write_configmap(action)
            if isinstance(action, rc.Rmpeer):
                reply = await self.bus.request(subjects.request("ipam", "rmpeer"), RmpeerRequest(peer=action.peer_name),
                                               RmpeerReply, timeout=BUS_TIMEOUT_S + 10)
                log.info("rmpeer %s: %d IPs taken over", action.peer_name, reply.taken_over)
                return rc.RmpeerDone(reply.taken_over)
            if isinstance(action, rc.Wait):
                await asyncio.sleep(max(0.0, action.until - self.clock()))
                return rc.Tick()
        except BusError as exc:
            return rc.Failed(exc.description)
        except Exception as exc:  # the API server or the network
            return rc.Failed(f"{type(exc).__name__}: {exc}")
        raise AssertionError(f"unknown action {action!r}")

    async def _get_configmap(self) -> ConfigMap:
        """Weave's Init: get, or create it empty if there is none (another node may create
        it first: then get again)."""
        while True:
            try:
                return await self.client.get(ConfigMap, pl.CONFIGMAP_NAME, namespace=pl.CONFIGMAP_NAMESPACE)
            except ApiError as exc:
                if not kube.is_not_found(exc):
                    raise
            try:
                meta = ObjectMeta(name=pl.CONFIGMAP_NAME, namespace=pl.CONFIGMAP_NAMESPACE)
                return await self.client.create(ConfigMap(metadata=meta))
            except ApiError as exc:
                if not kube.is_conflict(exc):  # 409 AlreadyExists: someone else made it
                    raise

    def _read_event(self, cm: ConfigMap) -> rc.ConfigMapRead:
        self._cm = cm.to_dict()
        meta = self._cm.get("metadata") or {}
        return rc.ConfigMapRead(dict(meta.get("annotations") or {}), str(meta.get("resourceVersion", "")))

    async def _write_configmap(self, action: rc.WriteConfigMap) -> rc.Event:
        body = {**self._cm, "metadata": {**(self._cm.get("metadata") or {}),
                                         "annotations": dict(action.annotations),
                                         "resourceVersion": action.resource_version}}
        try:
            return self._read_event(await self.client.replace(ConfigMap.from_dict(body)))
        except ApiError as exc:
            if kube.is_conflict(exc):
                return rc.Conflict()
            raise

    # -- readiness -------------------------------------------------------------------------
    async def _readiness_loop(self) -> None:
        while True:
            await self.check_readiness()
            await asyncio.sleep(self.config.readiness_interval_s)

    async def check_readiness(self) -> Readiness:
        topology = await self._ask(subjects.request("gossip", "peers"), PeersRequest(), TopologyEvent)
        ipam = await self._ask(subjects.request("ipam", "status"), StatusRequest(), StatusReply)
        if topology is not None and self.router_stale and self.nodes.synced:
            self.router_stale = False
            await self._tell_router(self.nodes.retell())
        before, self.state = self.state, readiness(
            synced=self.nodes.synced, nodes=self.nodes.nodes, my_node=self.config.node_name, topology=topology,
            ipam_status=ipam.status if ipam else None)
        if self.state.reason != before.reason:
            log.info("readiness: %s", self.state.reason)
        if self.state.ready and self.config.set_node_status and not self.node_status_set:
            await self._set_node_status()
        return self.state

    async def _ask(self, subject: str, msg, reply_type):
        try:
            return await self.bus.request(subject, msg, reply_type, timeout=BUS_TIMEOUT_S)
        except BusError:
            return None

    async def _set_node_status(self) -> None:
        """kube-utils -set-node-status: NodeNetworkUnavailable=False, reason WeaveIsUp."""
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        condition = {"type": "NetworkUnavailable", "status": "False", "reason": "WeaveIsUp",
                     "message": "Weave pod has set this", "lastTransitionTime": now, "lastHeartbeatTime": now}
        try:
            await self.client.patch(Node.Status, self.config.node_name, {"status": {"conditions": [condition]}},
                                    patch_type=PatchType.STRATEGIC)
            self.node_status_set = True
            log.info("node %s: network marked available", self.config.node_name)
        except Exception as exc:
            log.warning("cannot set node %s's NetworkUnavailable condition: %s", self.config.node_name, exc)

    async def _prime(self) -> None:
        while True:
            try:
                await self.bus.request(subjects.request("ipam", "prime"), PrimeRequest(wait_s=self.config.prime_wait_s),
                                       Ok, timeout=self.config.prime_wait_s + BUS_TIMEOUT_S)
                return
            except BusError as exc:
                log.info("ipam prime: %s; asking again", exc.description)
                await asyncio.sleep(self.config.readiness_interval_s)

    # -- views -----------------------------------------------------------------------------
    def report(self) -> dict[str, Any]:
        last = self.passes[-1] if self.passes else None
        return {"KubePeers": {
            "Ready": self.state.ready, "Reason": self.state.reason, "Node": self.config.node_name,
            "PeerName": self.me, "Nodes": {n.name: n.address for n in self.nodes.nodes.values()},
            "Missing": list(self.state.missing), "Targets": sorted(self.nodes.targets),
            "Registered": self.registered,
            "Reclaimed": [{"Peer": p, "At": at} for p, at in self.reclaimed],
            "LastPass": None if last is None else {"Reclaimed": list(last.reclaimed), "Skipped": list(last.skipped),
                                                   "Error": last.error},
        }}

    def section(self) -> str:
        r = self.report()["KubePeers"]
        others = sum(1 for n in self.nodes.nodes.values() if n.name != self.config.node_name)
        lines = [("Service", "kube-peers"), ("Status", "ready" if r["Ready"] else f"not ready: {r['Reason']}"),
                 ("Node", f"{r['Node']} ({len(self.nodes.nodes)} nodes, {others} others)"),
                 ("Targets", ", ".join(r["Targets"]) or "none"),
                 ("Reclaimed", ", ".join(x["Peer"] for x in r["Reclaimed"]) or "none")]
        return "".join(f"{k:>15}: {v}\n" for k, v in lines)

    def router(self) -> HttpRouter:
        http = HttpRouter()

        async def status(_: Request) -> Response:
            return Response(200, self.section())

        async def ready(_: Request) -> Response:
            return Response(200 if self.state.ready else 503, self.section())

        async def report(_: Request) -> Response:
            return Response(200, json.dumps(self.report(), indent=1) + "\n", "application/json")

        http.add("GET", "/status", status)
        http.add("GET", "/status/kube-peers", ready)
        http.add("GET", "/report", report)
        return http


class _NodeSink:
    def __init__(self, app: KubePeers) -> None:
        self.app = app

    async def on_list(self, items: list[dict[str, Any]], resource_version: str) -> None:
        await self.app.on_change(self.app.nodes.on_list(items, resource_version))

    async def on_event(self, event_type: str, obj: dict[str, Any]) -> None:
        await self.app.on_change(self.app.nodes.on_event(event_type, obj))
