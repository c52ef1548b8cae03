"""Controls and pipes through a real app on 127.0.0.1 and a real probe control client:
the probe dials the app's /api/control/ws, the app routes `POST /api/control/...` to it
(Scope's net/rpc-over-websocket frames), a terminal's bytes cross the app's pipe between
a real pty on the probe side and a websocket on the page's side. Also: what is refused
and how (controls off at the app or at the probe, an unknown control, a probe not
connected, other hosts' nodes, bad or oversized bodies, pipes nobody announced)."""
from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from services.scope import xfer
from services.scope.app.config import AppConfig
from services.scope.app.service import ScopeApp
from services.scope.probe.control_client import ControlClient, app_base_url, local_app_target
from services.scope.probe.controls import Controls
from shared import subjects
from shared.bus import MemoryBroker, MemoryBus
from shared.clock import RealClock
from shared.config import LaunchConfig, ScopeAppSettings, ServiceConfig
from shared.errors import RemoteProtocolError
from shared.http import HttpRouter
from shared.schemas.datapath import DetachReply, DetachRequest
from shared.service import ServiceContext

TOKEN = "t0ken"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PROBE = "0123456789abcdef"
HOST_NODE = "h1;<host>"


# -- the wire shapes (xfer) -----------------------------------------------------------
def test_rpc_frames_pair_headers_with_values():
    req = xfer.Request("h1;<host>", "host_exec", {"a": "b"}, "app")
    header, value = xfer.request_frames(7, req)
    assert json.loads(header) == {"Request": {"ServiceMethod": "control.Handle", "Seq": 7}, "Response": None,
                                  "Value": None}
    reader = xfer.RpcReader()
    assert reader.feed(header) is None
    call = reader.feed(value)
    assert (call.kind, call.seq, call.method) == ("request", 7, "control.Handle")
    assert xfer.Request.from_json(call.value) == req
    header, value = xfer.response_frames(7, xfer.response(pipe="p1", raw_tty=True))
    assert reader.feed(header) is None
    call = reader.feed(value)
    assert (call.kind, call.seq, call.error, call.value) == ("response", 7, "", {"pipe": "p1", "raw_tty": True})


@pytest.mark.parametrize("frame", ["not json", "[1]", '{"Value": 1}', '{"Request": {"Seq": -1}}',
                                   '{"Response": {"ServiceMethod": "x"}}'])
def test_rpc_reader_refuses_what_is_not_the_protocol(frame):
    with pytest.raises(RemoteProtocolError):
        xfer.RpcReader().feed(frame)


@pytest.mark.parametrize("value", [None, {"NodeID": "x"}, {"NodeID": "x", "Control": "c", "ControlArgs": {"a": 1}}])
def test_bad_control_requests(value):
    with pytest.raises(RemoteProtocolError):
        xfer.Request.from_json(value)


def test_probe_dials_its_own_app_on_loopback():
    assert local_app_target("0.0.0.0:4040") == "127.0.0.1:4040"
    assert local_app_target("[::]:4041") == "127.0.0.1:4041"
    assert local_app_target("192.168.77.2:4040") == "192.168.77.2:4040"
    assert app_base_url("127.0.0.1:4040") == "ws://127.0.0.1:4040"
    assert app_base_url("https://scope.example/prefix") == "wss://scope.example/prefix"


# -- through a running app ------------------------------------------------------------
class Stack:
    def __init__(self, app, bus, client, task, session, containers) -> None:
        self.app, self.bus, self.client, self.task, self.session = app, bus, client, task, session
        self.containers = containers
        self.url = f"http://127.0.0.1:{app.port}"

    async def control(self, node: str, control: str, body=None, probe: str = PROBE, headers=AUTH):
        path = f"/api/control/{probe}/{aiohttp.helpers.quote(node, safe='')}/{control}"
        data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        async with self.session.post(self.url + path, data=data, headers=headers) as resp:
            text = await resp.text()
            return resp.status, json.loads(text) if resp.content_type == "application/json" else text


async def start(app_controls: bool = True, probe_controls: bool = True, **config):
    broker = MemoryBroker()
    bus = MemoryBus(broker, "scope-app")
    app = ScopeApp(AppConfig(listen_host="127.0.0.1", listen_port=0, token=TOKEN, controls=app_controls, **config))
    ctx = ServiceContext("scope-app", ServiceConfig(service="scope-app", launch=LaunchConfig(), metrics_port=0,
                                                    settings=ScopeAppSettings()),
                         bus, CollectorRegistry(), RealClock(), HttpRouter())
    await app.start(ctx)
    probe_bus = MemoryBus(broker, "scope-probe")
    containers = {"c1"}
    controls = Controls("h1", probe_bus, probe_controls, lambda: set(containers))
    headers = {"Authorization": f"Scope-Probe token={TOKEN}", "X-Scope-Probe-Id": PROBE}
    session = aiohttp.ClientSession()
    client = ControlClient(f"127.0.0.1:{app.port}", headers, controls)
    task = asyncio.ensure_future(client.run(session))
    for _ in range(200):
        if app.state.controls.connected(PROBE):
            break
        await asyncio.sleep(0.02)
    return Stack(app, bus, client, task, session, containers)


async def stop(stack: Stack) -> None:
    stack.task.cancel()
    await asyncio.gather(stack.task, return_exceptions=True)
    await stack.client.close()
    stack.client.controls.close()
    await stack.session.close()
    await stack.app.stop()
    await stack.bus.close()


@pytest.fixture
async def stack():
    s = await start()
    try:
        yield s
    finally:
        await stop(s)


async def read_until(ws, text: str, timeout_s: float = 10.0) -> str:
    seen = ""
    async with asyncio.timeout(timeout_s):
        while text not in seen:
            msg = await ws.receive()
            assert msg.type in (aiohttp.WSMsgType.BINARY, aiohttp.WSMsgType.TEXT), (msg, seen)
            seen += msg.data.decode(errors="replace") if isinstance(msg.data, bytes) else msg.data
    return seen


async def test_a_host_shell_through_the_app(stack):
    assert stack.app.state.controls.connected(PROBE)
    status, result = await stack.control(HOST_NODE, "host_exec")
    assert status == 200 and result["raw_tty"] is True and result["resize_tty_control"] == "host_resize_exec_tty"
    pipe = result["pipe"]
    async with stack.session.get(f"{stack.url}/api/pipe/{pipe}/check", headers=AUTH) as resp:
        assert resp.status == 204
    async with stack.session.ws_connect(f"{stack.url}/api/pipe/{pipe}", headers=AUTH) as ws:
        await ws.send_bytes(b"echo marker-$((6*7))\n")
        assert "marker-42" in await read_until(ws, "marker-42")
        status, _ = await stack.control(HOST_NODE, "host_resize_exec_tty",
                                        {"pipeID": pipe, "width": "100", "height": "30"})
        assert status == 200
        await ws.send_bytes(b"stty size\n")
        assert "30 100" in await read_until(ws, "30 100")
    # the page closed its end: the pipe is gone and the shell with it
    for _ in range(100):
        if not stack.client.controls.terminals:
            break
        await asyncio.sleep(0.02)
    assert stack.client.controls.terminals == {}
    async with stack.session.get(f"{stack.url}/api/pipe/{pipe}/check", headers=AUTH) as resp:
        assert resp.status == 404


async def test_refusals_name_the_reason(stack):
    status, error = await stack.control(HOST_NODE, "docker_stop_container")
    assert status == 400 and "unknown control 'docker_stop_container'" in error
    status, error = await stack.control("h2;<host>", "host_exec")
    assert status == 400 and "runs on this probe's host h1;<host>" in error
    status, error = await stack.control("c9;<container>", "docker_exec_container")
    assert status == 400 and "not attached on host h1" in error
    status, error = await stack.control(HOST_NODE, "host_exec", probe="feedfeedfeedfeed")
    assert status == 400 and "not connected to this app" in error
    status, error = await stack.control(HOST_NODE, "weave_py_restart_service", {"service": "nats"})
    assert status == 400 and "not one of" in error
    status, error = await stack.control(HOST_NODE, "host_exec", b"[1, 2]")
    assert status == 400 and "JSON object of strings" in error
    status, error = await stack.control(HOST_NODE, "host_exec", b"x" * (65 << 10))
    assert status == 413
    status, _ = await stack.control(HOST_NODE, "host_exec", headers={})
    assert status == 401
    async with stack.session.get(f"{stack.url}/api/pipe/{'0' * 32}/check", headers=AUTH) as resp:
        assert resp.status == 404  # no control announced it
    with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
        await stack.session.ws_connect(f"{stack.url}/api/pipe/{'0' * 32}", headers=AUTH)
    assert exc.value.status == 404


async def test_detach_asks_the_datapath(stack):
    asked = []

    async def detach(req: DetachRequest) -> DetachReply:
        asked.append(req.container)
        return DetachReply(container_id=req.container, removed=("10.32.0.5/12",), remaining=())

    datapath = MemoryBus(stack.client.controls.bus.broker, "datapath")
    await datapath.serve(subjects.request("datapath", "detach"), DetachRequest, detach)
    try:
        status, result = await stack.control("c1;<container>", "weave_py_detach_container")
        assert (status, result, asked) == (200, {"value": "detached c1 from weave (10.32.0.5)"}, ["c1"])
    finally:
        await datapath.close()


async def test_controls_off_at_the_app_are_refused_before_any_probe():
    s = await start(app_controls=False)
    try:
        status, error = await s.control(HOST_NODE, "host_exec")
        assert status == 403 and "weave launch --scope-controls" in error
        assert s.client.calls == 0
    finally:
        await stop(s)


async def test_controls_off_at_the_probe_are_refused_by_it():
    s = await start(probe_controls=False)
    try:
        status, error = await s.control(HOST_NODE, "host_exec")
        assert status == 400 and error.startswith("controls are off on host h1")
        assert s.client.calls == 1 and s.client.controls.terminals == {}
    finally:
        await stop(s)


async def test_oversized_probe_frames_close_the_control_websocket():
    s = await start(settings=ScopeAppSettings(max_ws_frame_bytes=1024))
    try:
        headers = {"Authorization": f"Scope-Probe token={TOKEN}", "X-Scope-Probe-Id": "f" * 16}
        async with s.session.ws_connect(f"{s.url}/api/control/ws", headers=headers) as ws:
            await ws.send_str("x" * 2048)
            msg = await ws.receive(timeout=5)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
            assert ws.close_code == 1009
        assert not s.app.state.controls.connected("f" * 16)
    finally:
        await stop(s)
