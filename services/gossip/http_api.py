"""Weave Net's HTTP API of the router: the control port (127.0.0.1:6784: everything) and
the status port (6782: read-only views). Text formats come from `status`."""
from __future__ import annotations

import json
from typing import TYPE_CHECKING

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from services.gossip import status
from shared.http import Request, Response, Router

if TYPE_CHECKING:
    from services.gossip.service import GossipApp

VIEWS = {"peers": status.peers_text, "connections": status.connections_text, "targets": status.targets_text}


def add_status_routes(http: Router, app: "GossipApp") -> None:
    """GET /status, /status/{peers,connections,targets}, /report."""

    async def get_status(_: Request) -> Response:
        return Response(200, status.status_text(app.router))

    async def get_view(req: Request) -> Response:
        view = VIEWS.get(req.params["view"])
        if view is None:
            return Response(404, f"unknown status view {req.params['view']!r}; one of: {', '.join(VIEWS)}\n")
        return Response(200, view(app.router))

    async def get_report(_: Request) -> Response:
        body = {"Ready": True, "Version": status.VERSION, "Router": status.report(app.router)}
        return Response(200, json.dumps(body, indent=1) + "\n", "application/json")

    http.add("GET", "/status", get_status)
    http.add("GET", "/status/{view}", get_view)
    http.add("GET", "/report", get_report)


def api_router(app: "GossipApp", registry: CollectorRegistry) -> Router:
    """The control port: the status routes plus POST /connect, POST /forget, GET /metrics."""
    http = Router()
    add_status_routes(http, app)

    async def post_connect(req: Request) -> Response:
        form = req.form()
        peers = form.get("peer", [])
        replace = form.get("replace", ["false"])[0].lower() == "true"
        bad = [p for p in peers if not _valid_peer(p)]
        if bad:
            return Response(400, "invalid peer address: " + ", ".join(bad) + "\n")
        app.connect(peers, replace)
        return Response(200, "")

    async def post_forget(req: Request) -> Response:
        app.forget(req.form().get("peer", []))
        return Response(200, "")

    async def get_metrics(_: Request) -> Response:
        return Response(200, generate_latest(registry), CONTENT_TYPE_LATEST)

    http.add("POST", "/connect", post_connect)
    http.add("POST", "/forget", post_forget)
    http.add("GET", "/metrics", get_metrics)
    return http


def _valid_peer(peer: str) -> bool:
    """host[:port] with a non-empty host and, if given, a port in 1..65535."""
    host, sep, port = peer.rpartition(":")
    if not sep:
        return bool(peer) and " " not in peer
    return bool(host) and port.isdigit() and 0 < int(port) < 65536
