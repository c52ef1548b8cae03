"""kube-peers' shell with the real client library (lightkube) against the fake API server
of tests/kube_api.py, which serves the fixtures of tests/fixtures/kubernetes over HTTP
under the DaemonSet manifest's RBAC, and this host's services as twins on the in-memory
bus: `weave kube-peers list` and `check-peer-new`; the daemon's router targets from the
Node list and the recorded watch stream (and a relist after 410 Gone); the reclaim of
a node's peer when its Node is deleted; a claim lost to a ConfigMap update conflict;
readiness over the bus (503 with the reason, then 200) and the Node's status."""
from __future__ import annotations

import asyncio
import contextlib
import io
import json
import random
import threading
import time

import pytest

from shared import subjects
from shared.bus import MemoryBroker, MemoryBus
from shared.config import LaunchConfig
from shared.http import Request
from shared.http_bus import forward
from shared.kube import ApiConfig, make_client
from shared.schemas.base import Ok
from shared.schemas.ipam import PrimeRequest, RmpeerReply, RmpeerRequest, StatusReply, StatusRequest
from shared.schemas.mesh import ConnectRequest, ForgetRequest, PeerInfo, PeersRequest, TopologyEvent
from tests.kube_api import SA_TOKEN, FakeKubeApi, fixture
from weavectl import cli
from weavectl.kube_peers import KubePeersConfig
from weavectl.kube_peers import peer_list as pl
from weavectl.kube_peers.daemon import KubePeers

A, B, C, D = "aa:00:00:00:00:01", "aa:00:00:00:00:02", "aa:00:00:00:00:03", "aa:00:00:00:00:09"


async def until(cond, timeout=10.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def token(tmp_path) -> str:
    path = tmp_path / "token"
    path.write_text(SA_TOKEN)
    return str(path)


# ---- the CLI verbs (a sync test: the verb runs its own event loop) ------------------------------

@contextlib.contextmanager
def api_in_thread(api: FakeKubeApi):
    loop = asyncio.new_event_loop()
    started = threading.Event()
    box = {}

    def serve():
        asyncio.set_event_loop(loop)
        box["url"] = loop.run_until_complete(api.start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield box["url"]
    finally:
        asyncio.run_coroutine_threadsafe(api.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def weave(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli.main(list(argv))
    return code, out.getvalue()


def test_list_prints_every_nodes_peer_address_and_check_peer_new(tmp_path, capsys):
    api = FakeKubeApi()
    api.seed("nodes", fixture("nodes.json"))
    with api_in_thread(api) as url:
        common = ["--api", url, "--token-file", token(tmp_path)]
        assert weave("kube-peers", "list", *common) == (0, "10.0.0.1\n10.0.0.2\n203.0.113.3\n")
        assert weave("kube-peers", "check-peer-new", *common, "--peer-name", A)[0] == 0, "no ConfigMap: new"
        api.put("", "configmaps", fixture("configmap-weave-net.json"))
        assert weave("kube-peers", "check-peer-new", *common, "--peer-name", A)[0] == 9, "in the list"
        assert weave("kube-peers", "check-peer-new", *common, "--peer-name", "aa:00:00:00:00:44")[0] == 0
        assert weave("kube-peers", "list", "--api", url, "--token-file", str(tmp_path / "none"))[0] == 1
    assert "Kubernetes API" in capsys.readouterr().err, "no token: the 401 is reported"
    assert [r.status for r in api.requests] == [200, 404, 200, 200, 401]
    assert {r.verb for r in api.requests} == {"list", "get"}


# ---- the daemon -----------------------------------------------------------------------------------

class Host:
    """Twins of this host's gossip and ipam services on the in-memory bus."""

    def __init__(self, broker: MemoryBroker) -> None:
        self.bus = MemoryBus(broker, "twins")
        self.log: list[tuple[str, ConnectRequest | ForgetRequest]] = []  # what the router was told, in order
        self.rmpeers: list[str] = []
        self.ipam_status = "awaiting consensus (quorum: 3, known: 1)"
        self.peers: list[PeerInfo] = []
        self.primed = 0

    async def start(self) -> None:
        async def connect(req):
            self.log.append(("connect", req))
            return Ok()

        async def forget(req):
            self.log.append(("forget", req))
            return Ok()

        async def peers(_):
            me = PeerInfo(name=B, nickname="node-b", uid=1, short_id=1, reachable=True)
            return TopologyEvent(ourself=B, peers=(me, *self.peers))

        async def status(_):
            return StatusReply(status=self.ipam_status, range="10.32.0.0/12", range_num_ips=1 << 20,
                               default_subnet="10.32.0.0/12", active_ips=0, entries=(), pending_allocates=0,
                               pending_claims=0, mode="consensus", quorum=3)

        async def rmpeer(req):
            self.rmpeers.append(req.peer)
            return RmpeerReply(peer=req.peer, taken_over=4096)

        async def prime(_):
            self.primed += 1
            return Ok()

        for verb, typ, handler in (("connect", ConnectRequest, connect), ("forget", ForgetRequest, forget),
                                   ("peers", PeersRequest, peers)):
            await self.bus.serve(subjects.request("gossip", verb), typ, handler)
        for verb, typ, handler in (("status", StatusRequest, status), ("rmpeer", RmpeerRequest, rmpeer),
                                   ("prime", PrimeRequest, prime)):
            await self.bus.serve(subjects.request("ipam", verb), typ, handler)

    def targets(self) -> set[str]:
        """The router's targets after everything it was told."""
        out: set[str] = set()
        for kind, req in self.log:
            if kind == "connect":
                out = set(req.peers) if req.replace else out | set(req.peers)
            else:
                out -= set(req.peers)
        return out


@contextlib.asynccontextmanager
async def daemon(tmp_path, api: FakeKubeApi, **overrides):
    url = await api.start()
    broker = MemoryBroker()
    host = Host(broker)
    await host.start()
    config = KubePeersConfig(node_name="node-b", api=ApiConfig(url, token(tmp_path)), reclaim_delay_max_s=0.05,
                             retry_period_s=0.05, readiness_interval_s=0.05, **overrides)
    launch = LaunchConfig(state_dir=tmp_path, name=B, nickname="node-b")
    bus = MemoryBus(broker, subjects.KUBE_PEERS)
    client = make_client(config.api)
    app = KubePeers(config, launch, bus, client, rng=random.Random(3))
    await app.start()
    try:
        yield app, host, bus
    finally:
        await app.stop()
        await api.stop()  # ends every watch stream, so the client's connections close
        await client.close()


def seeded(configmap: bool = True) -> FakeKubeApi:
    api = FakeKubeApi()
    api.seed("nodes", fixture("nodes.json"))
    if configmap:
        api.put("", "configmaps", fixture("configmap-weave-net.json"))
    return api


def annotations(api: FakeKubeApi) -> dict[str, str]:
    return api.get("", "configmaps", "weave-net", "kube-system")["metadata"].get("annotations") or {}


async def test_targets_follow_the_nodes_and_a_deleted_nodes_peer_is_reclaimed(tmp_path):
    api = seeded()
    async with daemon(tmp_path, api) as (app, host, _):
        # at start: registered (already listed), and node-gone's peer D reclaimed
        await until(lambda: host.rmpeers == [D], what="D reclaimed at start")
        await until(lambda: app.passes and app.passes[-1].reclaimed == (D,), what="the pass done")
        assert pl.peer_list(annotations(api)) == (pl.PeerInfo(A, "node-a"), pl.PeerInfo(B, "node-b"),
                                                  pl.PeerInfo(C, "node-c"))
        assert set(annotations(api)) == {pl.PEERS_KEY}
        assert host.log[0] == ("connect", ConnectRequest(peers=("10.0.0.1", "203.0.113.3"), replace=True))

        api.replay(fixture("nodes-watch.jsonl"))  # node-e added, node-b heartbeat, node-c moved, node-a deleted
        await until(lambda: host.targets() == {"10.0.0.3", "10.0.0.5"}, what="targets from the watch")
        await until(lambda: host.rmpeers == [D, A], what="node-a's peer reclaimed")
        await until(lambda: pl.peer_list(annotations(api)) == (pl.PeerInfo(B, "node-b"), pl.PeerInfo(C, "node-c")),
                    what="node-a's peer released from the list")

        # a Node deleted while our watch's resourceVersion expired: the relist finds it gone
        del api.objects[("", "nodes")][(None, "node-e")]
        api.version += 10
        api.compact("", "nodes")
        api.end_watches()
        await until(lambda: host.targets() == {"10.0.0.3"}, what="relisted after 410 Gone")
        lists = [r for r in api.requests if r.resource == "nodes" and r.verb == "list"]
        assert len(lists) >= 2
        assert all(r.status != 403 for r in api.requests), "RBAC grants all kube-peers does"
        assert {(r.verb, r.resource) for r in api.requests} >= {("list", "nodes"), ("watch", "nodes"),
                                                                 ("get", "configmaps"), ("update", "configmaps")}


async def test_a_claim_lost_to_a_conflict_is_left_to_its_winner(tmp_path):
    api = seeded()

    def other_node_writes_first(stored):  # node-c claims D between our read and our write
        cm = json.loads(json.dumps(stored))
        cm["metadata"]["annotations"][pl.claim_key(D)] = C
        api.put("", "configmaps", cm)

    api.before_update = other_node_writes_first
    async with daemon(tmp_path, api) as (app, host, _):
        await until(lambda: app.passes, what="a pass")
        done = app.passes[-1]
        assert (done.reclaimed, done.error) == ((), "") and D in done.skipped
        assert host.rmpeers == [], "C holds the claim"
        conflict = [r for r in api.requests if r.verb == "update" and r.status == 409]
        assert len(conflict) == 1
        assert annotations(api)[pl.claim_key(D)] == C


async def test_readiness_over_the_bus_then_the_nodes_status(tmp_path):
    api = seeded(configmap=False)  # no ConfigMap: created, then we join its list
    async with daemon(tmp_path, api) as (app, host, bus):
        async def ready():
            return await forward(bus, subjects.KUBE_PEERS, Request("GET", "/status/kube-peers", {}, {}, b""))

        await until(lambda: "not yet in the mesh" in app.state.reason, what="a readiness check after the list")
        resp = await ready()
        assert resp.status == 503
        assert "not ready: not yet in the mesh: the peers of 2 of 2 other nodes (node-a, node-c); " \
               "ipam: awaiting consensus (quorum: 3, known: 1)" in resp.body.decode()
        host.peers = [PeerInfo(name=A, nickname="node-a", uid=2, short_id=2, reachable=True, address="10.0.0.1"),
                      PeerInfo(name=C, nickname="node-c", uid=3, short_id=3, reachable=True, address="")]
        host.ipam_status = "ready"
        await until(lambda: app.state.ready, what="ready")
        resp = await ready()
        assert resp.status == 200 and "Status: ready" in resp.body.decode()
        assert host.primed == 1
        section = await forward(bus, subjects.KUBE_PEERS, Request("GET", "/status", {}, {}, b""))
        assert "Service: kube-peers" in section.body.decode()
        report = json.loads((await forward(bus, subjects.KUBE_PEERS, Request("GET", "/report", {}, {}, b""))).body)
        assert report["KubePeers"]["Ready"] is True and report["KubePeers"]["Registered"] is True
        await until(lambda: app.node_status_set, what="node status")
        cond = {c["type"]: c for c in api.get("", "nodes", "node-b")["status"]["conditions"]}
        assert (cond["NetworkUnavailable"]["status"], cond["NetworkUnavailable"]["reason"]) == ("False", "WeaveIsUp")
        assert pl.peer_list(annotations(api)) == (pl.PeerInfo(B, "node-b"),)
        created = [r for r in api.requests if r.verb == "create"]
        assert [(r.resource, r.status) for r in created] == [("configmaps", 201)]
        assert all(r.status != 403 for r in api.requests)


@pytest.mark.parametrize("verb, resource", [("delete", "nodes"), ("update", "nodes"), ("get", "secrets")])
def test_the_fake_api_refuses_what_rbac_does_not_grant(verb, resource):
    from tests.kube_api import Target, allowed, rbac_rules

    cluster, local = rbac_rules()
    assert not allowed(cluster + local, Target(verb, "", resource, "", "kube-system", "x"))
    assert allowed(local, Target("update", "", "configmaps", "", "kube-system", "weave-net"))
    assert not allowed(local, Target("update", "", "configmaps", "", "kube-system", "other"))
