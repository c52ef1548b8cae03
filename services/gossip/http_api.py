"""Weave Net's HTTP API of the router: the control port (127.0.0.1:6784: everything) and
the status port (6782: read-only views). Text formats come from `status`."""
from __future__ import annotations

import asyncio
import json
from typing import Protocol

from shared.prom import CONTENT_TYPE, CollectorRegistry, generate_latest

from services.gossip import status
from services.gossip.router import Router as MeshRouter
from shared.bus import Bus
from shared.http import HttpRouter, Request, Response
from shared.http_bus import forward


class GossipApi(Protocol):
    """What these routes need of the gossip service (its shell implements it)."""

    router: MeshRouter
    bus: Bus

    def connect(self, peers: list[str], replace: bool = False) -> None: ...

    def forget(self, peers: list[str]) -> None: ...

VIEWS = {"peers": status.peers_text, "connections": status.connections_text, "targets": status.targets_text}
# Paths of Weave's API that other services own; requests are forwarded over the bus.
OWNED_PREFIXES = {
    "/ip": "ipam", "/ipinfo": "ipam", "/ring": "ipam", "/peer": "ipam",
    "/name": "dns", "/domain": "dns", "/dns-address": "dns", "/dns-address-port": "dns",
    "/expose": "datapath", "/hide": "datapath",
}
SECTION_SERVICES = ("ipam", "dns", "datapath", "npc", "kube-peers")  # their GET /status and /report parts
# (kube-peers runs only in the Kubernetes add-on; elsewhere nobody answers and its part is left out)
VIEW_OWNERS = {"ipam": "ipam", "dns": "dns", "npc": "npc", "kube-peers": "kube-peers"}


def add_status_routes(http: HttpRouter, app: GossipApi) -> None:
    """GET /status, /status/{peers,connections,targets}, /report."""

    async def get_status(_: Request) -> Response:
        sections = [status.status_text(app.router)]
        for resp in await _sections(app, "/status"):
            if resp.status == 200 and resp.body:
                sections.append(resp.body.decode() if isinstance(resp.body, bytes) else resp.body)
        return Response(200, "\n".join(sections))

    async def get_view(req: Request) -> Response:
        name = req.params["view"]
        if name in VIEW_OWNERS:
            return await forward(app.bus, VIEW_OWNERS[name], Request("GET", f"/status/{name}", {}, {}, b""))
        view = VIEWS.get(name)
        if view is None:
            known = ", ".join([*VIEWS, *VIEW_OWNERS])
            return Response(404, f"unknown status view {name!r}; one of: {known}\n")
        return Response(200, view(app.router))

    async def get_report(_: Request) -> Response:
        body = {"Ready": True, "Version": status.VERSION, "Router": status.report(app.router)}
        for resp in await _sections(app, "/report"):
            if resp.status == 200:
                try:
                    section = json.loads(resp.body)
                except ValueError:
                    continue
                body["Router"] = status.merge_router(body["Router"], section.pop("Router", None) or {})
                body.update(section)
        return Response(200, json.dumps(body, indent=1) + "\n", "application/json")

    http.add("GET", "/status", get_status)
    http.add("GET", "/status/{view}", get_view)
    http.add("GET", "/report", get_report)


def api_router(app: GossipApi, registry: CollectorRegistry) -> HttpRouter:
    """The control port: the status routes plus POST /connect, POST /forget, GET /metrics."""
    http = HttpRouter()
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
        return Response(200, generate_latest(registry), CONTENT_TYPE)

    http.add("POST", "/connect", post_connect)
    http.add("POST", "/forget", post_forget)
    http.add("GET", "/metrics", get_metrics)
    for prefix, svc in OWNED_PREFIXES.items():
        http.add_prefix(prefix, _forwarder(app, svc))
    return http


SECTION_TIMEOUT_S = 5.0  # a service that does not answer in time is left out of the view


async def _sections(app: GossipApi, path: str) -> list[Response]:
    """Every other service's part of /status or /report, asked at once."""
    return list(await asyncio.gather(*(forward(app.bus, svc, Request("GET", path, {}, {}, b""),
                                               timeout=SECTION_TIMEOUT_S) for svc in SECTION_SERVICES)))


def _forwarder(app: GossipApi, service: str):
    async def handler(req: Request) -> Response:
        return await forward(app.bus, service, req)

    return handler


def _valid_peer(peer: str) -> bool:
    """host[:port] with a non-empty host and, if given, a port in 1..65535."""
    host, sep, port = peer.rpartition(":")
    if not sep:
        return bool(peer) and " " not in peer
    return bool(host) and port.isdigit() and 0 < int(port) < 65536
