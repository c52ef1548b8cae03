"""Scope 1.13's HTTP API on aiohttp (Scope's app/router.go and api_*.go): thin handlers
over `AppState`; every answer is rendered by `render.api`.

- `GET /api`, `/api/topology`, `/api/topology/<t>`, `/api/topology/<t>/<id>` (ids
  URL-encoded, `+` a space, as Scope's matcher), `/api/report`, `/api/probes`
  (`?sparse`: just whether any probe reports): JSON, `Cache-Control: no-cache`, `Vary:
  Accept-Encoding`, gzipped when the client accepts gzip.
- `GET /api/topology/<t>/ws?t=<Go duration>`: websocket (websocket.py).
- `POST /api/report`: a probe's report, msgpack or JSON, gzipped or not; 200 with an
  empty body; 400 with the reason as a JSON string for anything else (the app goes on);
  413 over `max_body_bytes`.
- Node details list only the controls this app can run now (`AppState.control_offered`:
  controls on, and the node's probe connected to this app).
Beside these: the page (static.py), login, controls, pipes and traces (ui_api.py); and
before all of them the token and origin rules (auth.py): 401 for any request without
the token when one is configured.
"""
from __future__ import annotations

import json
import logging
from urllib.parse import unquote_plus

from aiohttp import web

from services.scope.app import auth, static, ui_api
from services.scope.app.render.api import UnknownTopology
from services.scope.app.state import AppState
from services.scope.app.websocket import first_values as query_of
from services.scope.app.websocket import serve_websocket
from services.scope.report import report_to_json
from shared.errors import RemoteProtocolError

log = logging.getLogger("weave.scope.app.http")
STATE = web.AppKey("state", AppState)


def make_web_app(state: AppState) -> web.Application:
    app = web.Application(client_max_size=state.config.settings.max_body_bytes,
                          middlewares=[auth.middleware(state.config.token, _count_refused(state))])
    app[STATE] = state
    static.add_routes(app)
    ui_api.add_routes(app, state)
    app.router.add_get("/api", api_details)
    app.router.add_get("/api/topology", topology_list)
    app.router.add_get("/api/topology/{rest:.+}", topology)
    app.router.add_get("/api/report", raw_report)
    app.router.add_get("/api/probes", probes)
    app.router.add_post("/api/report", post_report)
    return app


def _count_refused(state: AppState):
    def count(request: web.Request) -> None:
        if request.path == "/api/report":
            state.rejected.labels("http", "unauthorized").inc()
    return count


def respond(request: web.Request, value, status: int = 200) -> web.Response:
    resp = web.Response(status=status, body=json.dumps(value, separators=(",", ":")).encode(),
                        content_type="application/json",
                        headers={"Cache-Control": "no-cache", "Vary": "Accept-Encoding"})
    if "gzip" in request.headers.get("Accept-Encoding", ""):
        resp.enable_compression(web.ContentCoding.gzip)
    return resp


def not_found() -> web.Response:
    return web.Response(status=404, text="404 page not found\n")


async def api_details(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return respond(request, {"id": state.config.app_id, "version": state.config.version,
                             "hostname": state.config.hostname, "plugins": list(state.report().plugins),
                             "capabilities": {"historic_reports": False}})


async def topology_list(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return respond(request, state.timed("topology_list", state.render().topology_list, query_of(request)))


async def topology(request: web.Request) -> web.StreamResponse:
    """`/api/topology/<t>`, `<t>/ws` and `<t>/<id>`, split on the raw path so that an
    encoded `/` in a node id stays inside it."""
    path = request.raw_path.split("?", 1)[0]
    parts = [unquote_plus(p) for p in path.split("/")[3:]]
    state = request.app[STATE]
    try:
        if len(parts) == 1:
            nodes = state.timed("topology", state.render().summaries, parts[0], query_of(request))
            return respond(request, {"nodes": nodes})
        if len(parts) == 2 and parts[1] == "ws":
            return await serve_websocket(request, state, parts[0])
        if len(parts) == 2:
            node = state.timed("node", state.render().details, parts[0], parts[1], query_of(request))
            if node is None:
                return not_found()
            controls = [c for c in node.get("controls") or () if state.control_offered(c["probeId"])]
            return respond(request, {"node": {**node, "controls": controls}})
    except UnknownTopology:
        pass
    return not_found()


async def raw_report(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return respond(request, state.timed("report", report_to_json, state.report()))


async def probes(request: web.Request) -> web.Response:
    state = request.app[STATE]
    render = state.render()
    if "sparse" in request.query:
        return respond(request, bool(render.probes()))
    return respond(request, render.probes())


def _error(status: int, message: str) -> web.Response:
    return web.Response(status=status, body=json.dumps(message).encode(), content_type="application/json",
                        headers={"Cache-Control": "no-cache"})


async def post_report(request: web.Request) -> web.Response:
    state = request.app[STATE]
    content_type = request.headers.get("Content-Type", "")
    if not content_type.startswith(("application/json", "application/msgpack")):
        state.rejected.labels("http", "unsupported_media_type").inc()
        return _error(400, f"Unsupported Content-Type: {content_type}")
    try:
        body = await request.read()
    except web.HTTPRequestEntityTooLarge:
        state.rejected.labels("http", "too_large").inc()
        raise
    probe_id = request.headers.get("X-Scope-Probe-ID") or f"http:{request.remote}"
    try:
        state.take_body(body, content_type, request.headers.get("Content-Encoding"), source="http",
                        probe_id=probe_id, version=request.headers.get("X-Scope-Probe-Version", ""))
    except RemoteProtocolError as exc:
        state.rejected.labels("http", getattr(exc, "code", "bad_report") or "bad_report").inc()
        log.info("bad report from %s (probe %s): %s", request.remote, probe_id, exc)
        return _error(400, str(exc))
    return web.Response(status=200)
