"""The probe shell in process, on an in-memory bus, with stand-ins answering as the other
services do (datapath containers, npc blocked flows, gossip peers and the mesh channel),
a router /report and a Scope app target served over real HTTP, and a real child
process in a network namespace of its own as the attached container."""
from __future__ import annotations

import asyncio
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiohttp import web
from prometheus_client import generate_latest

from services.scope.codec import decode_report
from services.scope.probe.service import ProbeApp
from shared import subjects
from shared.bus import BusMsg, MemoryBroker, MemoryBus
from shared.clock import RealClock
from shared.config import LaunchConfig, ScopeProbeSettings, for_service
from shared.http import HttpRouter
from shared.metrics import new_registry
from shared.schemas.datapath import ContainerEvent, ContainersReply, ContainersRequest
from shared.schemas.mesh import MeshSend, PeerInfo, PeersRequest, TopologyEvent
from shared.schemas.npc import BlockedFlow, BlockedReply, BlockedRequest
from shared.schemas.scope import (REPORT_TOPIC, SCOPE_CHANNEL, ProbeReport, ProbeStatusReply, ProbeStatusRequest,
                                  decode_mesh)
from shared.service import ServiceContext

FIXTURES = Path(__file__).parent.parent / "fixtures"
WEAVE = json.loads((FIXTURES / "weave-2.8/samples/report-h1.json").read_text())
FAST = ScopeProbeSettings(spy_interval_s=0.1, publish_interval_s=0.3, full_report_every=3, weave_poll_s=0.2)
SERVER = """
import os, socket, time
os.system("ip link set lo up")
srv = socket.socket(); srv.bind(("127.0.0.1", 5201)); srv.listen()
cli = socket.create_connection(("127.0.0.1", 5201)); acc, _ = srv.accept()
print(cli.getsockname()[1], flush=True)
time.sleep(60)
"""


async def eventually(cond, timeout: float = 10.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def container():
    proc = subprocess.Popen(["unshare", "--net", sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True)
    client_port = int(proc.stdout.readline())
    yield proc, client_port
    proc.kill()
    proc.wait()


async def start_http(routes) -> tuple[web.AppRunner, int]:
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, site._server.sockets[0].getsockname()[1]


async def test_probe_publishes_on_the_bus_the_mesh_and_to_a_scope_app(tmp_path, container):
    proc, client_port = container
    netns = os.stat(f"/proc/{proc.pid}/ns/net").st_ino
    posts: list[tuple[dict, bytes]] = []

    async def post_report(request: web.Request) -> web.Response:
        posts.append((dict(request.headers), await request.read()))
        return web.Response(status=200)

    async def get_report(_: web.Request) -> web.Response:
        return web.json_response(WEAVE)

    scope_app, scope_port = await start_http([web.post("/api/report", post_report)])
    router, router_port = await start_http([web.get("/report", get_report)])
    broker = MemoryBroker()
    bus, others = MemoryBus(broker, "scope-probe"), MemoryBus(broker, "others")
    event = ContainerEvent(kind="attached", container_id="wt-h1c1", cidrs=("10.32.0.5/12",), mac="6a:00:00:00:00:01",
                           fqdn="iperf.weave.local.", netns_inode=netns)
    blocked = BlockedFlow(protocol="tcp", src="10.40.0.9", sport=41000, dst="10.32.0.5", dport=80,
                          at_unix=time.time())
    peers = TopologyEvent(ourself="aa:00:00:00:00:01", peers=tuple(
        PeerInfo(name=f"aa:00:00:00:00:0{i}", nickname=f"h{i}", uid=i, short_id=i, reachable=True) for i in (1, 2, 3)))

    async def containers(_: ContainersRequest) -> ContainersReply:
        return ContainersReply(containers=(event,))

    async def npc_blocked(req: BlockedRequest) -> BlockedReply:
        return BlockedReply(flows=(blocked,) if blocked.at_unix >= req.since_unix else (), total=1, capacity=256)

    async def gossip_peers(_: PeersRequest) -> TopologyEvent:
        return peers

    await others.serve(subjects.request("datapath", "containers"), ContainersRequest, containers)
    await others.serve(subjects.request("npc", "blocked"), BlockedRequest, npc_blocked)
    await others.serve(subjects.request("gossip", "peers"), PeersRequest, gossip_peers)
    local: list[ProbeReport] = []
    mesh: list[MeshSend] = []

    async def on_local(msg: BusMsg) -> None:
        local.append(ProbeReport.model_validate_json(msg.data))

    async def on_mesh(msg: BusMsg) -> None:
        mesh.append(MeshSend.model_validate_json(msg.data))

    await others.subscribe(subjects.event(REPORT_TOPIC), on_local)
    await others.subscribe(subjects.mesh_out(SCOPE_CHANNEL), on_mesh)

    launch = LaunchConfig(state_dir=tmp_path, name="aa:00:00:00:00:01", nickname="h1",
                          scope_targets=(f"127.0.0.1:{scope_port}",), scope_token="s3cret")
    registry = new_registry()
    ctx = ServiceContext("scope-probe", for_service("scope-probe", launch), bus, registry, RealClock(), HttpRouter())
    app = ProbeApp(FAST, weave_url=f"http://127.0.0.1:{router_port}/report")
    await app.start(ctx)
    try:
        await eventually(lambda: len(local) >= 4 and len(posts) >= 4, what="four reports")
        assert [r.full for r in local[:4]] == [True, False, False, True]
        assert app.health()[0] is True
        first = local[0]
        assert (first.probe_id, first.host) == (app.probe_id, "h1") and first.probe_version.startswith("weave-py-")
        report = decode_report(first.body, "application/msgpack", "gzip")

        # the container, its process, and the process's connection
        c = report.container.nodes["wt-h1c1;<container>"]
        assert c.lookup("weave_dns_hostname") == "iperf.weave.local"
        procs = [n for n in report.process.nodes.values() if n.lookup("pid") == str(proc.pid)]
        assert procs and procs[0].parents["container"] == ("wt-h1c1;<container>",)
        server = report.endpoint.nodes[f"h1-{netns};127.0.0.1;5201"]
        client = report.endpoint.nodes[f"h1-{netns};127.0.0.1;{client_port}"]
        assert server.lookup("pid") == client.lookup("pid") == str(proc.pid)
        assert client.adjacency == (f"h1-{netns};127.0.0.1;5201",)
        # the host, the weave peers with each link's overlay, the blocked flow
        assert report.host.nodes["h1;<host>"].lookup("host_name") == "h1"
        me = report.overlay.nodes["#aa:00:00:00:00:01"]
        assert me.lookup("weave_py_overlay_to_aa:00:00:00:00:03") == "sleeve"
        assert report.endpoint.nodes[";10.40.0.9;41000"].lookup("weave_py_blocked") == "true"

        # the same bytes on the mesh, and POSTed with Scope's headers
        assert mesh[0].kind == "broadcast" and decode_mesh(mesh[0].payload) == first
        headers, body = posts[0]
        assert body in {gzip.decompress(r.body) for r in local}, "aiohttp's server un-gzips request bodies"
        assert headers["User-Agent"] == f"Scope_Probe/{first.probe_version}"
        assert headers["Authorization"] == "Scope-Probe token=s3cret"
        assert (headers["Content-Encoding"], headers["Content-Type"]) == ("gzip", "application/msgpack")
        assert headers["X-Scope-Probe-Id"] == app.probe_id
        assert headers["X-Scope-Probe-Version"] == first.probe_version

        status = await others.request(subjects.request("scope-probe", "status"), ProbeStatusRequest(),
                                      ProbeStatusReply)
        assert status.reports >= 4 and status.last_bytes > 0 and status.bytes_per_s > 0
        assert status.targets == (f"http://127.0.0.1:{scope_port}/api/report",)
        expected = sum(len(m.payload) for m in mesh[:status.reports]) * 2  # two other peers get each broadcast
        assert app.mesh_bytes == expected
        metrics = generate_latest(registry).decode()
        assert 'scope_probe_reports_total{kind="full"}' in metrics
        assert f'scope_probe_target_reports_total{{outcome="sent",target="http://127.0.0.1:{scope_port}/api/report"}}' \
            in metrics
    finally:
        await app.stop()
        await bus.close()
        await others.close()
        await scope_app.cleanup()
        await router.cleanup()


async def test_an_absent_scope_app_and_absent_services_do_not_stop_the_probe(tmp_path):
    broker = MemoryBroker()
    bus, watcher = MemoryBus(broker, "scope-probe"), MemoryBus(broker, "watcher")
    local: list[ProbeReport] = []

    async def on_local(msg: BusMsg) -> None:
        local.append(ProbeReport.model_validate_json(msg.data))

    await watcher.subscribe(subjects.event(REPORT_TOPIC), on_local)
    launch = LaunchConfig(state_dir=tmp_path, name="aa:00:00:00:00:01", nickname="lonely",
                          scope_targets=("127.0.0.1:9",))
    ctx = ServiceContext("scope-probe", for_service("scope-probe", launch), bus, new_registry(), RealClock(),
                         HttpRouter())
    app = ProbeApp(FAST, weave_url="http://127.0.0.1:9/report")
    await app.start(ctx)
    try:
        await eventually(lambda: len(local) >= 2 and app.targets[0].failed >= 1, what="reports despite failures")
        report = decode_report(local[0].body, "application/msgpack", "gzip")
        assert list(report.host.nodes) == ["lonely;<host>"] and not report.overlay.nodes
        assert not report.container.nodes
    finally:
        await app.stop()
        await bus.close()
        await watcher.close()


def test_scope_target_urls_as_scope_probe_takes_them():
    from services.scope.probe.app_client import report_url
    assert report_url("10.0.0.9") == "http://10.0.0.9:4040/api/report"
    assert report_url("10.0.0.9:4041") == "http://10.0.0.9:4041/api/report"
    assert report_url("http://scope.example/prefix/") == "http://scope.example:4040/prefix/api/report"
    assert report_url("https://scope.example") == "https://scope.example/api/report"
    assert report_url("[fd00::1]:4040") == "http://[fd00::1]:4040/api/report"
    with pytest.raises(ValueError):
        report_url("http://:4040")


def test_local_networks_of_this_namespace_read_at_most_every_refresh(monkeypatch):
    from services.scope.probe import host
    real = host.local_networks()
    assert "127.0.0.1/8" in real
    reads = []
    monkeypatch.setattr(host, "local_networks", lambda: reads.append(1) or real)
    nets = host.LocalNetworks(refresh_s=10.0)
    assert [nets.get(t) for t in (100.0, 105.0, 109.9)] == [real] * 3 and len(reads) == 1
    nets.get(110.0)
    assert len(reads) == 2
