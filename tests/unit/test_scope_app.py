"""The Scope app service through real HTTP and websockets on 127.0.0.1, and its bus and
mesh inputs over the in-memory bus. Every fixture body the real probe POSTed is POSTed
here with the probe's own headers; answers are compared with the render of the same
merged report and, where the fixtures have them, with the real app's answers."""
from __future__ import annotations

import asyncio
import gzip
import json
import time

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from services.scope.app.collector import Collector
from services.scope.app.config import AppConfig
from services.scope.app.render.api import ReportRender
from services.scope.app.render.view import from_report
from services.scope.app.service import ScopeApp
from services.scope.app.websocket import parse_duration
from services.scope.codec import decode_report
from services.scope.report import Report, merge_reports, report_from_json
from shared import subjects
from shared.bus import MemoryBroker, MemoryBus
from shared.clock import ManualClock, RealClock
from shared.config import LaunchConfig, ScopeAppSettings, ServiceConfig
from shared.http import HttpRouter
from shared.schemas.mesh import MeshReceive
from shared.schemas.scope import REPORT_TOPIC, SCOPE_CHANNEL, ProbeReport, encode_mesh
from shared.service import ServiceContext
from tests.reference import scope_dir

POSTS = scope_dir() / "probe-post"
APP = scope_dir() / "app"
PROBE_ID = "100f401f58172167"


def body(i: int) -> bytes:
    return (POSTS / f"report-00{i}.msgpack.gz").read_bytes()


def probe_headers(i: int) -> dict[str, str]:
    """The headers the real probe sent with report i (minus the connection's own)."""
    recorded = json.loads((POSTS / f"report-00{i}.headers.json").read_text())["headers"]
    return {k: v for k, v in recorded if k not in ("Host", "Content-Length", "Connection", "Accept-Encoding")}


def expected(*reports: Report) -> ReportRender:
    return ReportRender(from_report(merge_reports(reports)))


class Running:
    """A started ScopeApp on 127.0.0.1 (a free port) with its in-memory bus."""

    def __init__(self, app: ScopeApp, bus: MemoryBus, session: aiohttp.ClientSession, clock) -> None:
        self.app, self.bus, self.session, self.clock = app, bus, session, clock
        self.url = f"http://127.0.0.1:{app.port}"

    async def get(self, path: str, **kw):
        async with self.session.get(self.url + path, **kw) as resp:
            return resp.status, resp.headers, await resp.read()

    async def get_json(self, path: str):
        status, _, data = await self.get(path)
        assert status == 200, (path, status, data)
        return json.loads(data)

    async def post(self, data: bytes, headers: dict[str, str]):
        async with self.session.post(self.url + "/api/report", data=data, headers=headers) as resp:
            return resp.status, resp.headers, await resp.read()


async def start_app(clock=None, **config) -> tuple[ScopeApp, MemoryBus, ServiceContext]:
    bus = MemoryBus(MemoryBroker(), "scope-app")
    app = ScopeApp(AppConfig(listen_host="127.0.0.1", listen_port=0, **config))
    ctx = ServiceContext("scope-app", ServiceConfig(service="scope-app", launch=LaunchConfig(), metrics_port=0,
                                                    settings=ScopeAppSettings()),
                         bus, CollectorRegistry(), clock or RealClock(), HttpRouter())
    await app.start(ctx)
    return app, bus, ctx


@pytest.fixture
async def running():
    app, bus, ctx = await start_app()
    session = aiohttp.ClientSession(auto_decompress=True)
    try:
        yield Running(app, bus, session, ctx.clock)
    finally:
        await session.close()
        await app.stop()
        await bus.close()


async def eventually(check, timeout_s: float = 5.0):
    deadline = time.monotonic() + timeout_s
    while True:
        result = await check()
        if result or time.monotonic() > deadline:
            return result
        await asyncio.sleep(0.02)


# -- POST /api/report ----------------------------------------------------------------
async def test_every_fixture_body_is_taken_and_rendered(running):
    for i in range(1, 5):
        status, headers, data = await running.post(body(i), probe_headers(i))
        assert (status, data) == (200, b"")
        assert headers["Content-Length"] == "0" and "Content-Type" not in headers  # as the real app
    reports = [decode_report(body(i), "application/msgpack", "gzip") for i in range(1, 5)]
    want = expected(*reports)
    for topology in ("processes", "processes-by-name", "hosts", "containers", "weave"):
        assert (await running.get_json(f"/api/topology/{topology}"))["nodes"] == want.summaries(topology, {})
        assert (await running.get_json(f"/api/topology/{topology}?t=1s"))["nodes"] == \
            want.summaries(topology, {"t": "1s"})
    assert await running.get_json("/api/topology") == want.topology_list({})
    probes = await running.get_json("/api/probes")
    assert [(p["id"], p["hostname"], p["version"]) for p in probes] == [(PROBE_ID, "sca1-host", "12175b96a")]
    assert await running.get_json("/api/probes?sparse") is True


async def test_the_real_apps_own_report_comes_back_as_its_answers(running):
    """`GET /api/report` of a Scope app is a report a Scope app takes back by POST: the
    real app's merged report, POSTed as JSON, gives the real app's answers."""
    merged = (APP / "api_report.json").read_bytes()
    assert (await running.post(merged, {"Content-Type": "application/json"}))[0] == 200
    for topology in ("processes", "processes-by-name", "hosts"):
        real = json.loads((APP / f"api_topology_{topology}.json").read_text())
        assert await running.get_json(f"/api/topology/{topology}") == real
    assert await running.get_json("/api/topology") == json.loads((APP / "api_topology.json").read_text())
    node = await running.get_json("/api/topology/processes-by-name/%2Fusr%2Fbin%2Fpython3")
    assert node == json.loads((APP / "api_topology_processes-by-name__usr_bin_python3.json").read_text())
    ours = report_from_json(await running.get_json("/api/report"))
    assert ours.process.nodes == report_from_json(json.loads(merged)).process.nodes


async def test_our_report_posted_to_a_fresh_app_renders_alike(running):
    for i in range(1, 5):
        await running.post(body(i), probe_headers(i))
    ours = await running.get_json("/api/report")
    app2, bus2, _ = await start_app()
    try:
        async with aiohttp.ClientSession() as s:
            url = f"http://127.0.0.1:{app2.port}"
            gz = gzip.compress(json.dumps(ours).encode())
            async with s.post(url + "/api/report", data=gz, headers={
                    "Content-Type": "application/json", "Content-Encoding": "gzip"}) as resp:
                assert resp.status == 200
            for topology in ("processes", "hosts"):
                async with s.get(f"{url}/api/topology/{topology}") as resp:
                    assert await resp.json() == await running.get_json(f"/api/topology/{topology}")
    finally:
        await app2.stop()
        await bus2.close()


@pytest.mark.parametrize("name", ["report-stdout-001.json", "report-stdout-002.json"])
async def test_json_bodies_plain_and_gzipped(running, name):
    data = (scope_dir() / "probe-stdout-json" / name).read_bytes()
    assert (await running.post(data, {"Content-Type": "application/json"}))[0] == 200
    assert (await running.post(gzip.compress(data), {"Content-Type": "application/json; charset=utf-8",
                                                     "Content-Encoding": "gzip"}))[0] == 200
    hosts = (await running.get_json("/api/topology/hosts"))["nodes"]
    assert list(hosts) == ["sca1-host;<host>"]


async def test_msgpack_without_gzip(running):
    raw = gzip.decompress(body(4))
    assert (await running.post(raw, {"Content-Type": "application/msgpack"}))[0] == 200
    assert "sca1-host;5" in (await running.get_json("/api/topology/processes"))["nodes"]


BAD = [
    ({"Content-Type": "text/plain"}, b"hello", '"Unsupported Content-Type: text/plain"'),
    ({"Content-Type": "application/msgpack", "Content-Encoding": "gzip"}, b"not gzip at all", None),
    ({"Content-Type": "application/msgpack", "Content-Encoding": "gzip"}, None, None),  # truncated gzip
    ({"Content-Type": "application/msgpack"}, b"\xc1\xc1\xc1", None),
    ({"Content-Type": "application/msgpack"}, b"\x93\x01\x02\x03", None),  # msgpack, not a report
    ({"Content-Type": "application/json"}, b"{not json", None),
    ({"Content-Type": "application/json"}, b'{"Process": {"nodes": {"x": {"latest": {"pid": 7}}}}}', None),
    ({"Content-Type": "application/json", "Content-Encoding": "br"}, b"{}", None),
]


@pytest.mark.parametrize("headers,data,exact", BAD)
async def test_bad_bodies_get_400_and_the_app_goes_on(running, headers, data, exact):
    await running.post(body(4), probe_headers(4))
    before = await running.get_json("/api/topology/processes")
    data = body(3)[: len(body(3)) // 2] if data is None else data
    status, resp_headers, answer = await running.post(data, headers)
    assert status == 400
    assert resp_headers["Content-Type"].startswith("application/json")
    assert isinstance(json.loads(answer), str)
    if exact is not None:  # the real app's answer (response-headers.txt)
        assert answer.decode() == exact
    assert await running.get_json("/api/topology/processes") == before
    assert (await running.get("/api"))[0] == 200


async def test_a_body_over_the_bound_is_refused():
    app, bus, _ = await start_app(settings=ScopeAppSettings(max_body_bytes=4096))
    try:
        async with aiohttp.ClientSession() as s:
            url = f"http://127.0.0.1:{app.port}"
            async with s.post(url + "/api/report", data=b"\0" * 5000,
                              headers={"Content-Type": "application/msgpack"}) as resp:
                assert resp.status == 413
            async with s.post(url + "/api/report", data=body(1), headers=probe_headers(1)) as resp:
                assert resp.status == 200  # 3.5 kB: under the bound
    finally:
        await app.stop()
        await bus.close()


async def test_a_configured_token_is_required():
    app, bus, _ = await start_app(token="s3cret")
    try:
        async with aiohttp.ClientSession() as s:
            url = f"http://127.0.0.1:{app.port}/api/report"
            headers = probe_headers(4)  # the probe sent "Scope-Probe token=" (none)
            async with s.post(url, data=body(4), headers=headers) as resp:
                assert resp.status == 401
            headers["Authorization"] = "Scope-Probe token=s3cret"
            async with s.post(url, data=body(4), headers=headers) as resp:
                assert resp.status == 200
    finally:
        await app.stop()
        await bus.close()


# -- GET answers ---------------------------------------------------------------------
async def test_response_headers_like_the_real_apps(running):
    await running.post(body(4), probe_headers(4))
    status, headers, data = await running.get("/api/topology/processes", headers={"Accept-Encoding": "identity"})
    assert status == 200
    assert headers["Cache-Control"] == "no-cache" and headers["Vary"] == "Accept-Encoding"
    assert headers["Content-Type"] == "application/json"
    assert "Content-Encoding" not in headers
    async with running.session.get(running.url + "/api/topology/processes",
                                   headers={"Accept-Encoding": "gzip"}, auto_decompress=False) as resp:
        assert resp.headers["Content-Encoding"] == "gzip"
        assert json.loads(gzip.decompress(await resp.read())) == json.loads(data)


async def test_api_details(running):
    details = await running.get_json("/api")
    assert details["capabilities"] == {"historic_reports": False}
    assert details["plugins"] == [] and len(details["id"]) == 16
    assert set(details) == set(json.loads((APP / "api.json").read_text()))


async def test_node_ids_are_url_decoded(running):
    await running.post((APP / "api_report.json").read_bytes(), {"Content-Type": "application/json"})
    host = await running.get_json("/api/topology/hosts/sca1-host%3B%3Chost%3E")
    # the report offers host_exec, but this app runs no controls (off, and no probe connected)
    assert host["node"]["id"] == "sca1-host;<host>" and host["node"]["controls"] == []
    assert (await running.get_json("/api/topology/processes/sca1-host%3B5"))["node"]["label"] == "/usr/bin/python3"
    assert (await running.get("/api/topology/processes/sca1-host%3B999999"))[0] == 404
    assert (await running.get("/api/topology/nosuch"))[0] == 404
    assert (await running.get("/api/topology/nosuch/x"))[0] == 404


# -- the window --------------------------------------------------------------------
async def test_reports_leave_the_window_after_15_s():
    clock = ManualClock()
    app, bus, _ = await start_app(clock=clock)
    try:
        async with aiohttp.ClientSession() as s:
            url = f"http://127.0.0.1:{app.port}"
            async with s.post(url + "/api/report", data=body(4), headers=probe_headers(4)) as resp:
                assert resp.status == 200
            clock.advance(14.9)
            async with s.get(url + "/api/topology/hosts") as resp:
                assert list((await resp.json())["nodes"]) == ["sca1-host;<host>"]
            clock.advance(0.2)
            async with s.get(url + "/api/topology/hosts") as resp:
                assert (await resp.json())["nodes"] == {}
            async with s.get(url + "/api/probes") as resp:
                assert await resp.json() == []
    finally:
        await app.stop()
        await bus.close()


def test_collector_caches_the_merge_until_it_changes():
    c = Collector(15.0)
    r1 = decode_report(body(1), "application/msgpack", "gzip")
    c.add(r1, 0.0, "a")
    first = c.render(1.0)
    assert c.render(2.0) is first  # nothing new: the same render
    c.add(decode_report(body(4), "application/msgpack", "gzip"), 3.0, "b")
    second = c.render(3.0)
    assert second is not first
    assert "sca1-host;464" in second.summaries("processes", {})
    assert c.render(15.5) is not second  # report 1 left the window
    assert [p.probe_id for p in c.probes(15.5)] == ["b"]
    assert c.next_expiry() == 18.0


def test_collector_bounds_probes_and_reports():
    c = Collector(15.0, max_reports_per_probe=2, max_probes=2)
    r = Report.make(0, "1")
    for i in range(5):
        c.add(r, float(i), "a")
    c.add(r, 5.0, "b")
    c.add(r, 6.0, "c")  # "a" was heard from least recently: forgotten
    assert sorted(p.probe_id for p in c.probes(6.0)) == ["b", "c"]
    c.add(r, 7.0, "b")
    c.add(r, 8.0, "b")
    assert len(c._reports["b"]) == 2


# -- websockets ----------------------------------------------------------------------
async def test_websocket_first_frame_then_diffs(running):
    await running.post(body(1), probe_headers(1))
    query = {"t": "100ms", "unconnected": "show"}  # report 1's endpoints have no pids yet: show all
    async with running.session.ws_connect(running.url + "/api/topology/processes/ws", params=query) as ws:
        first = json.loads((await ws.receive(timeout=5)).data)
        assert first["reset"] is True and first["update"] is None and first["remove"] is None
        state = expected(decode_report(body(1), "application/msgpack", "gzip")).summaries("processes", query)
        assert [n["id"] for n in first["add"]] == sorted(state)
        empty = json.loads((await ws.receive(timeout=5)).data)
        assert empty == json.loads((APP / "api_topology_processes_ws_t1s-msg-2.json").read_text())
        await running.post(body(4), probe_headers(4))
        changed = None
        for _ in range(50):
            frame = json.loads((await ws.receive(timeout=5)).data)
            if frame["add"] or frame["update"] or frame["remove"]:
                changed = frame
                break
        assert changed is not None and "reset" not in changed
        merged = expected(*(decode_report(body(i), "application/msgpack", "gzip") for i in (1, 4)))
        now = merged.summaries("processes", query)
        assert {n["id"] for n in changed["add"]} == set(now) - set(state) == {
            "sca1-host;443", "sca1-host;454", "sca1-host;464"}  # report 4's new processes
        assert changed["update"] == [now[n["id"]] for n in changed["update"]]  # as the merged report has them
        assert changed["remove"] is None
    assert await eventually(lambda: _zero(running.app.state.open_websockets))


async def _zero(n: int) -> bool:
    return n == 0


async def test_websocket_bad_interval_and_unknown_topology(running):
    status, _, data = await running.get("/api/topology/processes/ws?t=soon")
    assert status == 400 and json.loads(data) == "soon"
    assert (await running.get("/api/topology/nope/ws"))[0] == 404


@pytest.mark.parametrize("text,seconds", [("1s", 1.0), ("500ms", 0.5), ("1m30s", 90.0), ("0", 0.0),
                                          ("1.5h", 5400.0), ("250us", 0.00025)])
def test_go_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "1", "s", "1x", "1s2", "--1s"])
def test_bad_go_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


# -- the bus and the mesh ------------------------------------------------------------
def probe_report(i: int, probe_id: str = PROBE_ID) -> ProbeReport:
    return ProbeReport(probe_id=probe_id, host="sca1-host", probe_version="12175b96a", full=i in (1, 4), body=body(i))


async def test_reports_from_the_local_bus_and_the_mesh(running):
    sender = MemoryBus(running.bus.broker, "scope-probe")  # the probe's and the gossip service's side
    await sender.publish(subjects.event(REPORT_TOPIC), probe_report(1))
    mesh = MeshReceive(kind="broadcast", src="aa:bb:cc:dd:ee:ff", payload=encode_mesh(probe_report(4, "feedfeedfeedfeed")))
    await sender.publish(subjects.mesh_in(SCOPE_CHANNEL), mesh)
    await sender.close()

    async def both() -> bool:
        probes = await running.get_json("/api/probes")
        return len(probes) == 1 and "sca1-host;464" in (await running.get_json("/api/topology/processes"))["nodes"]
    assert await eventually(both)
    taken = running.app.state.reports
    assert taken.labels("bus")._value.get() == 1 and taken.labels("mesh")._value.get() == 1
    assert sorted(p.probe_id for p in running.app.state.collector.probes(running.clock.monotonic())) == [
        PROBE_ID, "feedfeedfeedfeed"]


async def test_bad_mesh_and_bus_messages_are_dropped(running):
    bus = running.bus
    await bus.publish(subjects.mesh_in(SCOPE_CHANNEL), MeshReceive(kind="broadcast", src="aa:00:00:00:00:09", payload=b"\x07junk"))
    bad = ProbeReport(probe_id="p", host="h", probe_version="v", full=True, body=b"not gzip")
    await bus.publish(subjects.event(REPORT_TOPIC), bad)
    rejected = running.app.state.rejected

    async def counted() -> bool:
        return (rejected.labels("mesh", "bad_scope_report")._value.get() == 1
                and rejected.labels("bus", "bad_report")._value.get() == 1)
    assert await eventually(counted)
    assert (await running.get("/api"))[0] == 200
    assert await running.get_json("/api/probes") == []


async def test_health(running):
    healthy, detail = running.app.health()
    assert healthy and "0 probes" in detail
    await running.post(body(4), probe_headers(4))
    assert "1 probes" in running.app.health()[1]


def test_config_from_the_launch_config(tmp_path):
    import json

    from shared.config import LaunchConfig, ScopeAppSettings

    launch = LaunchConfig(state_dir=tmp_path, scope_listen="[::1]:5050", scope_token="t", nickname="h1")
    config = AppConfig.from_launch(launch, ScopeAppSettings(window_s=5.0))
    assert (config.listen_host, config.listen_port, config.token, config.settings.window_s, config.hostname,
            config.trace_dir) == ("::1", 5050, "t", 5.0, "h1", tmp_path / "traces")
    # a launch.json written before the scope fields existed
    (tmp_path / "launch.json").write_text(json.dumps({"state_dir": str(tmp_path), "nickname": "h2"}))
    older = AppConfig.from_launch(LaunchConfig.load(tmp_path), ScopeAppSettings())
    assert (older.listen_host, older.listen_port, older.token, older.settings.window_s) == (
        "127.0.0.1", 4040, None, 15.0)
    assert (AppConfig().listen_host, AppConfig().listen_port) == ("127.0.0.1", 4040)
