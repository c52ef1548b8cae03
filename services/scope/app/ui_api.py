"""The routes beside Scope's read API: login, controls, pipes (Scope's shapes) and our
traces (`/api/weave/...`). Thin handlers over `AppState`; the rules are in auth.py,
controls.py and pipes.py.

- `GET|POST /login`: the session cookie (auth.py).
- `GET /api/control/ws`: a probe's control websocket.
- `POST /api/control/<probe id>/<node id>/<control>`: run a control (Scope's answers:
  200 with the response, 400 with the error as a JSON string), 403 while controls are
  off.
- `GET /api/pipe/<id>` (the page's end), `GET /api/pipe/<id>/probe` (the probe's),
  `GET /api/pipe/<id>/check` (204/404), `DELETE|POST /api/pipe/<id>` (close).
- `GET /api/weave/traces?node=<container node id>[&limit=N]`: that container's recent
  traces on this host (traces.py): `{node, container, host, here, traces}`.
- `GET /api/weave/config`: what the page needs to know of this app (controls on or
  off, whether a token guards it).
"""
from __future__ import annotations

import asyncio
import json
import logging
from functools import partial

from aiohttp import web

from services.scope import xfer
from services.scope.app import auth
from services.scope.app.controls import (CONTROLS_OFF, ControlError, control_path, parse_args, read_bounded,
                                         serve_probe_websocket)
from services.scope.app.pipes import PROBE, UI
from services.scope.app.render import keys
from services.scope.app.state import AppState
from services.scope.app.traces import container_of

log = logging.getLogger("weave.scope.app.ui")
MAX_TRACES = 50


def add_routes(app: web.Application, state: AppState) -> None:
    async def login(request: web.Request) -> web.StreamResponse:
        return await auth.login(request, state.config.token)

    async def probe_websocket(request: web.Request) -> web.StreamResponse:
        return await serve_probe_websocket(request, state.controls, state.config.settings.max_ws_frame_bytes)

    app.router.add_route("*", "/login", login)
    app.router.add_get("/api/control/ws", probe_websocket)
    app.router.add_post("/api/control/{rest:.+}", partial(control, state=state))
    app.router.add_get("/api/pipe/{id}", partial(pipe_end, state=state, end=UI))
    app.router.add_get("/api/pipe/{id}/probe", partial(pipe_end, state=state, end=PROBE))
    app.router.add_get("/api/pipe/{id}/check", partial(pipe_check, state=state))
    app.router.add_route("DELETE", "/api/pipe/{id}", partial(pipe_delete, state=state))
    app.router.add_post("/api/pipe/{id}", partial(pipe_delete, state=state))
    app.router.add_get("/api/weave/traces", partial(traces, state=state))
    app.router.add_get("/api/weave/config", partial(config, state=state))


def _json(value, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(value, separators=(",", ":")).encode(),
                        content_type="application/json", headers={"Cache-Control": "no-cache"})


async def control(request: web.Request, state: AppState) -> web.Response:
    try:
        if not state.config.controls:
            raise ControlError(403, CONTROLS_OFF)
        where = control_path(request.raw_path)
        if where is None:
            raise ControlError(404, "expected /api/control/<probe id>/<node id>/<control>")
        probe_id, node_id, name = where
        args = parse_args(await read_bounded(request, state.config.settings.max_control_body_bytes))
        result = await state.controls.handle(probe_id, xfer.Request(node_id, name, args, state.config.app_id),
                                             state.config.settings.control_timeout_s)
        if result.get("error"):
            raise ControlError(400, str(result["error"]))
        if result.get("pipe"):
            try:
                state.pipes.announce(str(result["pipe"]), probe_id)
            except ValueError as exc:
                raise ControlError(503, str(exc)) from None
    except ControlError as exc:
        log.info("control refused: %s", exc.message)
        return _json(exc.message, exc.status)
    log.info("control %s on %s (probe %s) done", name, node_id, probe_id)
    return _json(result)


async def pipe_end(request: web.Request, state: AppState, end: str) -> web.StreamResponse:
    if not state.config.controls:
        return _json(CONTROLS_OFF, 403)
    pipe = state.pipes.get(request.match_info["id"])
    if pipe is None:
        return web.Response(status=404, text="404 page not found\n")
    if end == PROBE and request.headers.get(xfer.PROBE_ID_HEADER, pipe.probe_id) != pipe.probe_id:
        return _json("this pipe belongs to another probe", 403)
    return await state.pipes.serve(request, pipe, end, state.config.settings.max_ws_frame_bytes)


async def pipe_check(request: web.Request, state: AppState) -> web.Response:
    exists = state.pipes.get(request.match_info["id"]) is not None
    return web.Response(status=204) if exists else web.Response(status=404, text="404 page not found\n")


async def pipe_delete(request: web.Request, state: AppState) -> web.Response:
    state.pipes.delete(request.match_info["id"])
    return web.Response(status=200)


async def traces(request: web.Request, state: AppState) -> web.Response:
    node_id = request.query.get("node", "")
    container = container_of(node_id)
    if container is None:
        return _json(f"not a container node id: {node_id!r}", 400)
    try:
        limit = max(1, min(MAX_TRACES, int(request.query.get("limit", "10"))))
    except ValueError:
        return _json("limit must be an integer", 400)
    node = state.report().container.nodes.get(node_id)
    host = keys.host_id_of(node.latest) if node is not None else ""
    here = not host or host == state.config.hostname
    found = await asyncio.to_thread(state.traces.for_container, container, limit) if here else []
    return _json({"node": node_id, "container": container, "host": host or state.config.hostname, "here": here,
                  "traces": found})


async def config(_: web.Request, state: AppState) -> web.Response:
    return _json({"controls": state.config.controls, "token": bool(state.config.token),
                  "hostname": state.config.hostname, "version": state.config.version})
