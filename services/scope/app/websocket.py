"""`GET /api/topology/<t>/ws?t=1s` (Scope's handleWebsocket).

The first frame is the whole topology (`add`, with `reset: true`); then every `t` (a Go
duration, default 1 s; shorter than `ws_min_interval_s` is raised to it), or sooner when
a shortcut report arrives, the diff from the last frame sent (an empty diff is all null).
The query's options apply to every frame. What the client sends is read and dropped;
the socket closes when the client goes. Each frame's state comes from the collector's
shared render, so sockets with the same query cost one render per report, not one each.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re

from aiohttp import WSMsgType, web

from services.scope.app.render.api import UnknownTopology, topology_diff
from services.scope.app.render.topologies import BY_ID
from services.scope.app.state import AppState

log = logging.getLogger("weave.scope.app.ws")
_DURATION_PART = re.compile(r"([0-9]*\.?[0-9]+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_S = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def first_values(request: web.Request) -> dict[str, str]:
    """Each query parameter's first value (Scope reads `req.Form[k][0]`)."""
    out: dict[str, str] = {}
    for k, v in request.query.items():
        out.setdefault(k, v)
    return out


def parse_duration(text: str) -> float:
    """A Go duration (`1s`, `500ms`, `1m30s`, `0`) in seconds; ValueError otherwise."""
    if text in ("0", "+0", "-0"):
        return 0.0
    sign, body = (-1.0, text[1:]) if text.startswith("-") else (1.0, text.lstrip("+"))
    pos, total = 0, 0.0
    for m in _DURATION_PART.finditer(body):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    if not body or pos != len(body):
        raise ValueError(f"time: invalid duration {text!r}")
    return sign * total


async def serve_websocket(request: web.Request, state: AppState, topology_id: str) -> web.StreamResponse:
    if topology_id not in BY_ID:
        raise UnknownTopology(topology_id)
    query = first_values(request)
    interval = state.config.settings.ws_interval_s
    if request.query.get("t"):
        try:
            interval = parse_duration(request.query["t"])
        except ValueError:
            return web.Response(status=400, body=json.dumps(request.query["t"]).encode(),
                                content_type="application/json")
    interval = max(interval, state.config.settings.ws_min_interval_s)
    if state.open_websockets >= state.config.settings.max_websockets:
        return web.Response(status=503, text="too many websockets\n")
    ws = web.WebSocketResponse(heartbeat=30.0)
    await ws.prepare(request)
    state.websockets.add(ws)
    state.open_websockets += 1
    reader = asyncio.ensure_future(_drain(ws))
    try:
        await _send_frames(ws, state, topology_id, query, interval, reader)
    finally:
        state.open_websockets -= 1
        reader.cancel()
        await ws.close()
    return ws


async def _drain(ws: web.WebSocketResponse) -> None:
    """Read and drop what the client sends; return when it closes."""
    async for msg in ws:
        if msg.type == WSMsgType.ERROR:
            return


async def _send_frames(ws, state: AppState, topology_id: str, query: dict, interval: float,
                       reader: asyncio.Future) -> None:
    previous = None
    while not reader.done() and not ws.closed:
        current = state.timed("websocket", state.render().summaries, topology_id, query)
        frame = topology_diff(previous, current)
        previous = current
        try:
            await ws.send_str(json.dumps(frame, separators=(",", ":")))
        except ConnectionError:
            return
        waiter = asyncio.ensure_future(state.wait_changed(interval))
        await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
