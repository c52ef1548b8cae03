"""The probe's control connection to one app (Scope's probe/appclient controlConnection
and pipeConnection).

`ControlClient.run()` dials `ws://<app>/api/control/ws` with the probe's headers
(`X-Scope-Probe-ID`, `Authorization: Scope-Probe token=<token>`) and serves the app's
rpc calls (xfer.py) with `Controls.handle`, one at a time, until the connection goes;
then it dials again after a backoff (1 s doubling to 60 s, Scope's). A shell a control
opened is carried by `ws://<app>/api/pipe/<id>/probe`: its output as binary messages,
the page's keystrokes back; the shell is killed when that websocket closes (the page
closed the terminal, the app went) and the websocket is closed when the shell exits.
Messages are bounded both ways (`MAX_FRAME`).
"""
from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

import aiohttp

from services.scope import xfer
from services.scope.probe.app_client import report_url
from services.scope.probe.controls import Controls
from services.scope.probe.terminal import Terminal
from shared.errors import RemoteProtocolError

log = logging.getLogger("weave.scope.probe.control")
MAX_FRAME = 1 << 20
INITIAL_BACKOFF_S, MAX_BACKOFF_S = 1.0, 60.0


def app_base_url(target: str) -> str:
    """`host[:port]` or `http(s)://host[:port][/prefix]` -> `ws(s)://host:port[/prefix]`."""
    url = report_url(target)[: -len("/api/report")]
    parts = urlsplit(url)
    return ("wss" if parts.scheme == "https" else "ws") + url[len(parts.scheme):]


def local_app_target(scope_listen: str) -> str:
    """This host's app, as its own probe reaches it: a wildcard address is dialled on
    loopback (the app listens there too)."""
    host, _, port = scope_listen.rpartition(":")
    host = host.strip("[]")
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class ControlClient:
    def __init__(self, target: str, headers: dict[str, str], controls: Controls) -> None:
        self.target, self.base = target, app_base_url(target)
        self.headers = {k: v for k, v in headers.items()
                        if k in ("Authorization", "User-Agent", "X-Scope-Probe-Id", "X-Scope-Probe-Version")}
        self.controls = controls
        self.connected = False
        self.calls = 0
        self._pipes: set[asyncio.Task] = set()

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Keep the control connection up until cancelled."""
        backoff = INITIAL_BACKOFF_S
        while True:
            try:
                await self._serve(session)
                backoff = INITIAL_BACKOFF_S
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, RemoteProtocolError) as exc:
                log.info("control connection to %s: %s; again in %.0f s", self.base, exc, backoff)
            self.connected = False
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    async def _serve(self, session: aiohttp.ClientSession) -> None:
        async with session.ws_connect(self.base + "/api/control/ws", headers=self.headers, heartbeat=30.0,
                                      max_msg_size=MAX_FRAME) as ws:
            self.connected = True
            log.info("control connection to %s up", self.base)
            reader = xfer.RpcReader()
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    return
                call = reader.feed(msg.data)
                if call is None:
                    continue
                if call.kind != "request":
                    raise RemoteProtocolError("the app sent an rpc response", code="bad_control")
                await self._answer(ws, call, session)

    async def _answer(self, ws, call: xfer.Call, session: aiohttp.ClientSession) -> None:
        self.calls += 1
        if call.method != xfer.SERVICE_METHOD:
            frames = xfer.response_frames(call.seq, {}, f"rpc: can't find service {call.method}", call.method)
        else:
            try:
                request = xfer.Request.from_json(call.value)
            except RemoteProtocolError as exc:
                response = xfer.response(error=str(exc))
            else:
                response = await self.controls.handle(
                    request, lambda pipe_id, term: self._open_pipe(session, pipe_id, term))
                log.info("control %s on %s from %s: %s", request.control, request.node_id, self.base,
                         response.get("error") or "done")
            frames = xfer.response_frames(call.seq, response)
        for frame in frames:
            await ws.send_str(frame)

    def _open_pipe(self, session: aiohttp.ClientSession, pipe_id: str, terminal: Terminal) -> None:
        task = asyncio.ensure_future(self._pipe(session, pipe_id, terminal))
        self._pipes.add(task)
        task.add_done_callback(self._pipes.discard)

    async def _pipe(self, session: aiohttp.ClientSession, pipe_id: str, terminal: Terminal) -> None:
        try:
            async with session.ws_connect(f"{self.base}/api/pipe/{pipe_id}/probe", headers=self.headers,
                                          heartbeat=30.0, max_msg_size=MAX_FRAME) as ws:
                await _bridge(ws, terminal)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            log.info("pipe %s to %s: %s", pipe_id, self.base, exc)
        finally:
            self.controls.closed(pipe_id)

    async def close(self) -> None:
        for task in list(self._pipes):
            task.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)


async def _bridge(ws: aiohttp.ClientWebSocketResponse, terminal: Terminal) -> None:
    """Shell output -> the app, the app's messages -> the shell, until either ends."""

    async def output() -> None:
        while data := await terminal.read():
            await ws.send_bytes(data)

    async def keys() -> None:
        async for msg in ws:
            if msg.type == aiohttp.WSMsgType.BINARY:
                terminal.write(msg.data)
            elif msg.type == aiohttp.WSMsgType.TEXT:
                terminal.write(msg.data.encode())
            else:
                return

    tasks = [asyncio.ensure_future(output()), asyncio.ensure_future(keys())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
