"""Safe by default, through a real app on 127.0.0.1: who may read, what is refused and
what a refusal says; the exposure rules `weave launch` and the app share; the page's
static files (served, 503 when not built, nothing outside the bundle); a container's
traces from span files."""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from services.scope.app import auth, static
from services.scope.app.config import AppConfig
from services.scope.app.service import ScopeApp
from services.scope.app.traces import TraceIndex
from shared.bus import MemoryBroker, MemoryBus
from shared.clock import RealClock
from shared.config import LaunchConfig, ScopeAppSettings, ServiceConfig, scope_exposure_problem
from shared.http import HttpRouter
from shared.service import ServiceContext
from weavectl.testbed import weave_bin

TOKEN = "s3cret-token"
PATHS = ("/", "/api", "/api/topology", "/api/topology/hosts", "/api/topology/hosts/x", "/api/report", "/api/probes",
         "/api/weave/config", "/api/weave/traces?node=c%3B%3Ccontainer%3E", "/static/app.js", "/api/pipe/p/check")


async def start(**config) -> ScopeApp:
    app = ScopeApp(AppConfig(listen_host="127.0.0.1", listen_port=0, **config))
    bus = MemoryBus(MemoryBroker(), "scope-app")
    await app.start(ServiceContext("scope-app", ServiceConfig(service="scope-app", launch=LaunchConfig(),
                                                              metrics_port=0, settings=ScopeAppSettings()),
                                   bus, CollectorRegistry(), RealClock(), HttpRouter()))
    app.test_bus = bus
    return app


@pytest.fixture
async def guarded():
    app = await start(token=TOKEN)
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as session:  # cookies of an IP
        yield app, session, f"http://127.0.0.1:{app.port}"
    await app.stop()
    await app.test_bus.close()


async def test_without_the_token_every_request_is_401_and_says_nothing(guarded):
    app, session, url = guarded
    for path in PATHS:
        async with session.get(url + path) as resp:
            body = await resp.text()
            assert resp.status == 401, path
            if path == "/":
                assert '<form id="login"' in body and "app.js" not in body
            else:
                assert body == auth.UNAUTHORIZED_BODY
                assert resp.headers["WWW-Authenticate"] == 'Bearer realm="weave-scope"'
    for path in ("/api/report", "/api/control/p/n/host_exec", "/api/pipe/x"):
        async with session.post(url + path, data=b"{}") as resp:
            assert resp.status == 401 and await resp.text() == auth.UNAUTHORIZED_BODY
    with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
        await session.ws_connect(url + "/api/topology/hosts/ws")
    assert exc.value.status == 401
    for wrong in ("Bearer nope", f"Bearer {TOKEN}x", "Scope-Probe token=nope", f"Basic {TOKEN}", TOKEN):
        async with session.get(url + "/api/topology", headers={"Authorization": wrong}) as resp:
            assert resp.status == 401, wrong


async def test_bearer_probe_header_and_login_cookie_are_accepted(guarded):
    app, session, url = guarded
    for header in (f"Bearer {TOKEN}", f"Scope-Probe token={TOKEN}"):
        async with session.get(url + "/api/topology", headers={"Authorization": header}) as resp:
            assert resp.status == 200
    async with session.ws_connect(url + "/api/topology/hosts/ws", headers={"Authorization": f"Bearer {TOKEN}"}) as ws:
        assert json.loads((await ws.receive()).data)["reset"] is True
    # /login?token= sets an HttpOnly, SameSite=Strict cookie that is not the token
    async with session.get(url + "/login?token=nope", allow_redirects=False) as resp:
        assert resp.status == 401 and "Wrong token" in await resp.text() and "Set-Cookie" not in resp.headers
    async with session.get(url + f"/login?token={TOKEN}", allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/"
        cookie = resp.headers["Set-Cookie"]
    assert TOKEN not in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    async with session.get(url + "/api/topology") as resp:  # the session keeps the cookie
        assert resp.status == 200
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as form:  # the form posts it
        async with form.post(url + "/login", data={"token": TOKEN}, allow_redirects=False) as resp:
            assert resp.status == 303
        async with form.get(url + "/api/weave/config") as resp:
            assert (await resp.json()) == {"controls": False, "token": True, "hostname": app.state.config.hostname,
                                           "version": app.state.config.version}


async def test_cross_site_changes_and_websockets_are_refused(guarded):
    _, session, url = guarded
    headers = {"Authorization": f"Bearer {TOKEN}", "Origin": "http://evil.example"}
    async with session.post(url + "/api/control/p/n/host_exec", headers=headers) as resp:
        assert resp.status == 403 and "cross-site" in await resp.text()
    with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
        await session.ws_connect(url + "/api/topology/hosts/ws", headers=headers)
    assert exc.value.status == 403
    same = {"Authorization": f"Bearer {TOKEN}", "Origin": url}
    async with session.get(url + "/api/topology", headers={**headers}) as resp:
        assert resp.status == 200  # a read from elsewhere is the browser's CORS business: no CORS headers
        assert "Access-Control-Allow-Origin" not in resp.headers
    async with session.post(url + "/api/control/p/n/host_exec", headers=same) as resp:
        assert resp.status == 403 and "controls are off" in await resp.text()


async def test_without_a_token_only_loopback_hosts_are_answered():
    app = await start()
    try:
        async with aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{app.port}"
            async with session.get(url + "/api/topology") as resp:
                assert resp.status == 200
            for host in ("localhost:4040", "[::1]:4040", "127.0.0.2"):
                async with session.get(url + "/api/topology", headers={"Host": host}) as resp:
                    assert resp.status == 200, host
            for host in ("attacker.example:4040", "192.168.1.5:4040"):  # DNS rebinding
                async with session.get(url + "/api/topology", headers={"Host": host}) as resp:
                    assert resp.status == 403, host
    finally:
        await app.stop()
        await app.test_bus.close()


async def test_report_bodies_stay_bounded(guarded):
    _, session, url = guarded
    headers = {"Authorization": f"Scope-Probe token={TOKEN}", "Content-Type": "application/json"}
    async with session.post(url + "/api/report", data=b" " * (9 << 20), headers=headers) as resp:
        assert resp.status == 413


@pytest.mark.parametrize("listen,token,controls,problem", [
    ("127.0.0.1:4040", None, False, None), ("[::1]:4040", None, False, None), ("localhost:4040", None, False, None),
    ("0.0.0.0:4040", None, False, "not a loopback address"), ("192.168.1.2:4040", None, False, "loopback"),
    ("0.0.0.0:4040", "t", False, None), ("127.0.0.1:4040", None, True, "--scope-controls needs --scope-token"),
    ("0.0.0.0:4040", "t", True, None)])
def test_exposure_rules(listen, token, controls, problem):
    got = scope_exposure_problem(listen, token, controls)
    assert (got is None) if problem is None else (problem in got)
    launch = LaunchConfig(scope_listen=listen, scope_token=token, scope_controls=controls, nickname="h1")
    if problem is None:
        assert AppConfig.from_launch(launch, ScopeAppSettings()).controls == controls
    else:
        with pytest.raises(ValueError):
            AppConfig.from_launch(launch, ScopeAppSettings())


@pytest.mark.parametrize("argv,reason", [
    (["--scope-listen", "0.0.0.0:4040"], "--scope-listen 0.0.0.0:4040 is not a loopback address"),
    (["--scope-controls"], "--scope-controls needs --scope-token")])
def test_weave_launch_refuses_in_one_line(tmp_path, argv, reason):
    out = subprocess.run([weave_bin(), "--state-dir", str(tmp_path), "launch", *argv], capture_output=True, text=True,
                         timeout=30, env={"PATH": "/usr/bin:/bin"})
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.splitlines() == [f"weave launch: {reason}: it needs --scope-token (or WEAVE_SCOPE_TOKEN)"
                                       if "listen" in reason else f"weave launch: {reason} (or WEAVE_SCOPE_TOKEN)"]
    assert not (tmp_path / "launch.json").exists()


# -- the page's files -----------------------------------------------------------------
async def serve_static(dist: Path) -> tuple[web.AppRunner, str]:
    app = web.Application()
    static.add_routes(app, dist)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    return runner, f"http://127.0.0.1:{runner.addresses[0][1]}"


async def test_static_files_only_from_the_bundle_and_503_until_built(tmp_path):
    runner, url = await serve_static(tmp_path)
    try:
        async with aiohttp.ClientSession() as session:
            async with session.get(url + "/") as resp:
                assert resp.status == 503 and (await resp.text()).count("\n") == 1 and "make web" in await resp.text()
            (tmp_path / "index.html").write_text("<html>page</html>")
            (tmp_path / "app.js").write_text("console.log(1)")
            (tmp_path.parent / "secret.txt").write_text("no")
            async with session.get(url + "/") as resp:
                assert resp.status == 200 and await resp.text() == "<html>page</html>"
                assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
            async with session.get(url + "/static/app.js") as resp:
                assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/javascript")
            for bad in ("/static/..%2Fsecret.txt", "/static/.hidden", "/static/nope.js"):
                async with session.get(url + bad) as resp:
                    assert resp.status == 404, bad
    finally:
        await runner.cleanup()


# -- traces -------------------------------------------------------------------------------
def span(trace: str, sid: str, parent: str | None, name: str, start: int, end: int, **attrs) -> dict:
    return {"trace_id": trace, "span_id": sid, "parent_id": parent, "name": name, "service": "weave-cli",
            "host": "h1", "kind": "INTERNAL", "start_ns": start, "end_ns": end, "status": "UNSET", "attributes": attrs}


def test_a_containers_traces_newest_first(tmp_path):
    lines = [span("t1", "a", None, "weave attach", 1_000_000, 9_000_000, **{"weave.container": "c1"}),
             span("t1", "b", "a", "weave.datapath.attach request", 2_000_000, 8_000_000),
             span("t2", "c", None, "weave attach", 20_000_000, 21_000_000, **{"weave.container": "c2"}),
             span("t3", "d", None, "weave detach", 30_000_000, 35_000_000, **{"weave.container": "c1"})]
    (tmp_path / "cli.jsonl").write_text("".join(json.dumps(s) + "\n" for s in lines) + "{cut by a crash")
    index = TraceIndex(tmp_path)
    traces = index.for_container("c1")
    assert [t["name"] for t in traces] == ["weave detach", "weave attach"]
    attach = traces[1]
    assert attach["duration_ms"] == 8.0 and [(s["name"], s["depth"], s["offset_ms"]) for s in attach["spans"]] == [
        ("weave attach", 0, 0.0), ("weave.datapath.attach request", 1, 1.0)]
    assert index.for_container("c1", limit=1)[0]["name"] == "weave detach"
    assert index.for_container("nope") == [] and TraceIndex(None).for_container("c1") == []
    with open(tmp_path / "datapath.jsonl", "w") as f:  # a new file is read on the next ask
        f.write(json.dumps(span("t4", "e", None, "weave detach", 40_000_000, 41_000_000, **{"weave.container": "c2"})))
    assert [t["trace_id"] for t in index.for_container("c2")] == ["t4", "t2"]
