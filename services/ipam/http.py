"""Weave Net's IPAM HTTP routes (weave:ipam/http.go, the /peer routes of
weave:prog/weaver), plus this service's parts of /status, /status/ipam and /report.

Bodies and status codes follow Weave: an address as `a.b.c.d/len`, addresses of a
lookup space-separated, 204 for a claim, release or leave, 400 with the reason for a
refused request. Where Weave has no good answer we give one: 404 for a lookup or
rmpeer of something unknown (Weave: empty 200, "0 IPs taken over"), 503 when a
request was cancelled or is still waiting after DEFAULT_WAIT_S (Weave: "cancelled"
with 200, or it blocks until the client gives up).
"""
from __future__ import annotations

import json
from typing import Awaitable, Callable, Protocol

from services.ipam import status
from services.ipam.address import CIDR
from services.ipam.allocator import Allocator
from services.ipam.errors import RequestError
from shared.errors import WeaveError
from shared.http import HttpRouter, Request, Response
from shared.schemas.ipam import DEFAULT_WAIT_S


class IpamApi(Protocol):
    """What the HTTP routes and bus endpoints (bus_api.py) need of the ipam service
    (its shell implements it)."""

    alloc: Allocator
    mode: str
    """The --ipalloc-init mode: "consensus", "seed" or "observer"."""
    left: bool
    """DELETE /peer handed our ranges over: no more requests are served."""
    refused: str
    """The last gossip we refused, '' if none."""

    # Requests that wait up to `wait_s` for the allocator (IpamApp documents the errors).
    async def allocate(self, ident: str, subnet: str | None = None, is_container: bool = True, *,
                       wait_s: float, what: str) -> CIDR: ...

    async def claim(self, ident: str, cidr: str, is_container: bool = True, *, no_error_on_unknown: bool = False,
                    wait_s: float, what: str) -> None: ...

    async def prime(self, *, wait_s: float, what: str) -> None: ...

    async def release(self, ident: str, addr: str, *, wait_s: float, what: str) -> None: ...

    async def delete(self, ident: str, *, wait_s: float, what: str) -> None: ...

    async def rmpeer(self, peer: str, *, wait_s: float, what: str) -> int: ...

    def leave(self) -> None: ...

JSON = "application/json"


def _error(exc: WeaveError, prefix: str = "") -> Response:
    code = 503 if exc.code in ("cancelled", "unavailable") else 400
    return Response(code, f"{prefix}{exc.message}\n")


def _guard(handler: Callable[[Request], Awaitable[Response]], prefix: str = ""):
    """Turn the core's refusals (and a wait that ran out) into Weave's error replies."""
    async def run(req: Request) -> Response:
        try:
            return await handler(req)
        except WeaveError as exc:
            return _error(exc, prefix)
    return run


def _cidr(req: Request) -> str:
    return f"{req.params['ip']}/{req.params['prefixlen']}"


def _flag(req: Request, name: str) -> bool:
    return req.form().get(name, [""])[0] == "true"


def build_router(app: IpamApi) -> HttpRouter:
    r = HttpRouter()

    async def allocate(req: Request) -> Response:
        subnet = _cidr(req) if "ip" in req.params else None
        cidr = await app.allocate(req.params["id"], subnet, wait_s=DEFAULT_WAIT_S,
                                  what=f"allocate for {req.params['id']}")
        return Response(200, str(cidr))

    async def claim(req: Request) -> Response:
        await app.claim(req.params["id"], _cidr(req), no_error_on_unknown=_flag(req, "noErrorOnUnknown"),
                        wait_s=DEFAULT_WAIT_S, what=f"claim of {_cidr(req)} for {req.params['id']}")
        return Response(204)

    async def lookup(req: Request) -> Response:
        subnet = _cidr(req) if "ip" in req.params else app.alloc.config.default_subnet
        try:
            cidrs = app.alloc.lookup(req.params["id"], subnet)
        except RequestError as exc:
            return _error(exc)
        if not cidrs:
            return Response(404, f"lookup: no address found for {req.params['id']} in {subnet}\n")
        return Response(200, " ".join(str(c) for c in cidrs))

    async def owned(_: Request) -> Response:
        rows = [{"containerid": ident, "addrs": [str(c) for c in data.cidrs]}
                for ident, data in sorted(app.alloc.owned.by_ident.items())]
        return Response(200, json.dumps({"owned": rows or None}, separators=(",", ":")) + "\n", JSON)

    async def release(req: Request) -> Response:
        await app.release(req.params["id"], req.params["ip"], wait_s=5.0, what="release")
        return Response(204)

    async def delete(req: Request) -> Response:
        await app.delete(req.params["id"], wait_s=5.0, what="delete")
        return Response(204)

    async def prime(_: Request) -> Response:
        await app.prime(wait_s=DEFAULT_WAIT_S, what="prime")
        return Response(200)

    async def leave(_: Request) -> Response:
        if not app.left:
            app.leave()
        return Response(204)

    async def rmpeer(req: Request) -> Response:
        peer = req.params["id"]
        try:
            gained = await app.rmpeer(peer, wait_s=5.0, what=f"rmpeer {peer}")
        except RequestError as exc:
            return Response(404 if exc.code == "unknown_peer" else 400, exc.message + "\n")
        return Response(200, f"{gained} IPs taken over from {peer}\n")

    async def default_subnet(_: Request) -> Response:
        return Response(200, str(app.alloc.config.default_subnet))

    async def tracker(_: Request) -> Response:
        return Response(200, "")  # no AWS VPC tracker here

    async def get_status(_: Request) -> Response:
        return Response(200, status.status_text(app.alloc))

    async def get_ranges(_: Request) -> Response:
        return Response(200, status.ranges_text(app.alloc))

    async def get_report(_: Request) -> Response:
        return Response(200, json.dumps({"IPAM": status.report(app.alloc)}), JSON)

    r.add("POST", "/ip/{id}", _guard(allocate))
    r.add("POST", "/ip/{id}/{ip}/{prefixlen}", _guard(allocate))
    r.add("PUT", "/ip/{id}/{ip}/{prefixlen}", _guard(claim, "Unable to claim: "))
    r.add("GET", "/ip/{id}/{ip}/{prefixlen}", lookup)
    r.add("GET", "/ip/{id}", lookup)
    r.add("GET", "/ip", owned)
    r.add("DELETE", "/ip/{id}/{ip}", _guard(release, "Unable to free: "))
    r.add("DELETE", "/ip/{id}", _guard(delete))
    r.add("GET", "/ring", _guard(prime))
    r.add("DELETE", "/peer", leave)
    r.add("DELETE", "/peer/{id}", _guard(rmpeer))
    r.add("GET", "/ipinfo/defaultsubnet", default_subnet)
    r.add("GET", "/ipinfo/tracker", tracker)
    r.add("GET", "/status", get_status)
    r.add("GET", "/status/ipam", get_ranges)
    r.add("GET", "/report", get_report)
    return r
