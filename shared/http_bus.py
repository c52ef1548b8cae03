"""HTTP routes served over the bus (see shared/schemas/http.py).

A service builds a `shared.http.HttpRouter` of its Weave-compatible routes and calls
`serve_http(bus, service, router)`. The gossip service calls `forward(...)` for a
request whose path that service owns. Each service's router also answers
`GET /status` (its section of `weave status`) and `GET /report` (its part of the
/report JSON, e.g. {"IPAM": {...}}), which the gossip service composes.
"""
from __future__ import annotations

from shared import subjects
from shared.bus import Bus, BusError
from shared.http import HttpRouter, Request, Response
from shared.schemas.http import HttpReply, HttpRequest

FORWARD_TIMEOUT_S = 30.0  # an allocation may wait for a quorum or a peer's space
HTTP_CONCURRENCY = 64  # requests a service handles at once (one waiting must not block /status)


async def serve_http(bus: Bus, service: str, router: HttpRouter) -> None:
    async def handle(req: HttpRequest) -> HttpReply:
        resp = await router.dispatch(Request(req.method, req.path, req.query, dict(req.headers), req.body))
        body = resp.body.encode() if isinstance(resp.body, str) else resp.body
        return HttpReply(status=resp.status, content_type=resp.content_type, body=body)

    await bus.serve(subjects.request(service, "http"), HttpRequest, handle, concurrency=HTTP_CONCURRENCY)


async def forward(bus: Bus, service: str, req: Request, timeout: float = FORWARD_TIMEOUT_S) -> Response:
    """Send `req` to `service`; a service that is down gives 503 with the reason."""
    msg = HttpRequest(method=req.method, path=req.path, query=req.query, headers=req.headers, body=req.body)
    try:
        reply = await bus.request(subjects.request(service, "http"), msg, HttpReply, timeout=timeout)
    except BusError as exc:
        status = 503 if exc.code in ("unavailable", "timeout") else 500
        return Response(status, f"the {service} service did not answer: {exc.description}\n")
    return Response(reply.status, reply.body, reply.content_type)
