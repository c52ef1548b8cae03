"""The ipam service's bus endpoints (shared/schemas/ipam.py) and Weave's HTTP routes
over the bus (`weave.ipam.http`, forwarded by the gossip service from 127.0.0.1:6784).

Requests that may wait (allocate, claim, prime, and HTTP, which carries all three) are
served concurrently (`Bus.serve(concurrency=...)`), so one allocation waiting for a ring
holds up nothing else; the quick ones one at a time. The core's RequestError codes
become the bus codes the schema documents.
"""
from __future__ import annotations

from typing import Awaitable, TypeVar

from services.ipam import http, status
from services.ipam.errors import RequestError
from shared import subjects
from shared.bus import Bus
from shared.errors import WeaveError
from shared.http_bus import serve_http
from shared.schemas.base import Ok
from shared.schemas.ipam import (AllocateReply, AllocateRequest, ClaimRequest, LookupReply, LookupRequest,
                                 PrimeRequest, ReleaseRequest, RingEntryInfo, RmpeerReply, RmpeerRequest, StatusReply,
                                 StatusRequest)

T = TypeVar("T")
BUS_CODES = {"bad_request": "bad_request", "out_of_range": "bad_request", "not_found": "not_found",
             "unknown_peer": "not_found", "in_use": "conflict", "owned_by_other_peer": "conflict",
             "cancelled": "unavailable"}


def bus_error(exc: RequestError) -> WeaveError:
    return WeaveError(exc.message, code=BUS_CODES.get(exc.code, "bad_request"))


async def register(app: http.IpamApi, bus: Bus, waiting: int) -> None:
    """`waiting`: how many requests that may wait are handled at once, per subject."""
    api = BusApi(app)
    await serve_http(bus, "ipam", http.build_router(app))
    await bus.serve(subjects.request("ipam", "allocate"), AllocateRequest, api.allocate, concurrency=waiting)
    await bus.serve(subjects.request("ipam", "claim"), ClaimRequest, api.claim, concurrency=waiting)
    await bus.serve(subjects.request("ipam", "prime"), PrimeRequest, api.prime, concurrency=waiting)
    await bus.serve(subjects.request("ipam", "release"), ReleaseRequest, api.release)
    await bus.serve(subjects.request("ipam", "lookup"), LookupRequest, api.lookup)
    await bus.serve(subjects.request("ipam", "rmpeer"), RmpeerRequest, api.rmpeer)
    await bus.serve(subjects.request("ipam", "status"), StatusRequest, api.status)


class BusApi:
    def __init__(self, app: http.IpamApi) -> None:
        self.app = app

    @staticmethod
    async def _call(request: Awaitable[T]) -> T:
        """The request's result, with the core's refusal as the bus error the schema names."""
        try:
            return await request
        except RequestError as exc:
            raise bus_error(exc) from None

    async def allocate(self, req: AllocateRequest) -> AllocateReply:
        cidr = await self._call(self.app.allocate(req.ident, req.subnet, req.is_container, wait_s=req.wait_s,
                                                  what=f"allocate for {req.ident}"))
        return AllocateReply(cidr=str(cidr))

    async def claim(self, req: ClaimRequest) -> Ok:
        await self._call(self.app.claim(req.ident, req.cidr, req.is_container,
                                        no_error_on_unknown=req.no_error_on_unknown, wait_s=req.wait_s,
                                        what=f"claim of {req.cidr} for {req.ident}"))
        return Ok()

    async def prime(self, req: PrimeRequest) -> Ok:
        await self._call(self.app.prime(wait_s=req.wait_s, what="prime"))
        return Ok()

    async def release(self, req: ReleaseRequest) -> Ok:
        if req.addr is None:
            await self._call(self.app.delete(req.ident, wait_s=5.0, what=f"delete of {req.ident}"))
        else:
            await self._call(self.app.release(req.ident, req.addr, wait_s=5.0, what=f"release of {req.addr}"))
        return Ok()

    async def lookup(self, req: LookupRequest) -> LookupReply:
        try:
            cidrs = self.app.alloc.lookup(req.ident, req.subnet)
        except RequestError as exc:
            raise bus_error(exc) from None
        return LookupReply(cidrs=tuple(str(c) for c in cidrs))

    async def rmpeer(self, req: RmpeerRequest) -> RmpeerReply:
        gained = await self._call(self.app.rmpeer(req.peer, wait_s=5.0, what=f"rmpeer {req.peer}"))
        return RmpeerReply(peer=req.peer, taken_over=gained)

    async def status(self, _: StatusRequest) -> StatusReply:
        return status_reply(self.app)


def status_reply(app: http.IpamApi) -> StatusReply:
    alloc = app.alloc
    rep = status.report(alloc)
    entries = tuple(RingEntryInfo(token=e["Token"], size=e["Size"], peer=e["Peer"], nickname=e["Nickname"],
                              reachable=e["IsKnownPeer"], version=e["Version"]) for e in rep["Entries"] or ())
    return StatusReply(
        status=status.status_line(rep), range=rep["Range"], range_num_ips=rep["RangeNumIPs"],
        default_subnet=rep["DefaultSubnet"], active_ips=rep["ActiveIPs"], entries=entries,
        pending_allocates=len(rep["PendingAllocates"] or ()), pending_claims=len(rep["PendingClaims"] or ()),
        mode=app.mode, quorum=0 if app.mode != "consensus" else alloc.quorum,
        left=app.left, refused=app.refused)

