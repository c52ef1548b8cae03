"""The datapath's use of IPAM, through Weave's own HTTP API carried on the bus
(`weave.ipam.http`, shared/schemas/http.py): the same requests `weave attach` makes to
a Weave router (POST /ip/{id}[/{net}/{len}], PUT /ip/{id}/{ip}/{len}, DELETE /ip/{id}[/{ip}]).

- `allocate` needs IPAM: when no ipam service answers it raises `IpamUnavailable` with
  what to do instead (give an explicit address).
- `claim` (an explicit address) works without IPAM: it returns False when no ipam
  service runs, True when IPAM recorded the claim; IPAM refusing it (held by another
  container) raises the matching error.
- `release` is best effort: a detach never fails because IPAM is away.
"""
from __future__ import annotations

import logging
from urllib.parse import quote

from services.datapath.netns import BadRequest, Conflict, DatapathError, NotFound
from shared import subjects
from shared.bus import Bus, BusError
from shared.schemas.http import HttpReply, HttpRequest

log = logging.getLogger(__name__)

ALLOCATE_TIMEOUT_S = 30.0
"""An allocation may wait for the ring's consensus or for a peer to donate space."""
RELEASE_TIMEOUT_S = 5.0


class IpamUnavailable(DatapathError):
    code = "unavailable"


_ERRORS = {400: BadRequest, 404: NotFound, 409: Conflict}


class Ipam:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def allocate(self, ident: str, subnet: str | None) -> str:
        """A fresh address `ip/len` for `ident` in `subnet` (None: IPAM's default subnet)."""
        path = f"/ip/{_seg(ident)}" + (f"/{subnet}" if subnet else "")
        reply = await self._call("POST", path, ALLOCATE_TIMEOUT_S, required=True)
        assert reply is not None
        return reply.body.decode().strip()

    async def claim(self, ident: str, cidr: str) -> bool:
        """Record `cidr` as held by `ident`. False: no IPAM runs here (nothing recorded)."""
        reply = await self._call("PUT", f"/ip/{_seg(ident)}/{cidr}", ALLOCATE_TIMEOUT_S, required=False,
                                 query={"noErrorOnUnknown": ["true"]})
        return reply is not None

    async def release(self, ident: str, ip: str | None = None) -> None:
        """Free one address of `ident` (`ip` without a length), or all of them."""
        path = f"/ip/{_seg(ident)}" + (f"/{ip}" if ip else "")
        try:
            await self._call("DELETE", path, RELEASE_TIMEOUT_S, required=False)
        except DatapathError as exc:  # not held (any more): nothing to free
            log.info("IPAM release %s: %s", path, exc)

    async def _call(self, method: str, path: str, timeout: float, *, required: bool,
                    query: dict[str, list[str]] | None = None) -> HttpReply | None:
        req = HttpRequest(method=method, path=path, query=query or {})
        try:
            reply = await self.bus.request(subjects.request("ipam", "http"), req, HttpReply, timeout=timeout)
        except BusError as exc:
            if exc.code not in ("unavailable", "timeout"):
                raise IpamUnavailable(f"IPAM failed: {exc.description}") from exc
            if not required:
                return None
            why = "is not running" if exc.code == "unavailable" else f"did not answer within {timeout:g} s"
            raise IpamUnavailable(f"IPAM {why}, so no address can be allocated: give an explicit address "
                                  "(e.g. 10.32.1.1/12) or check 'weave status ipam'") from exc
        if reply.status < 300:
            return reply
        text = reply.body.decode(errors="replace").strip() or f"HTTP {reply.status}"
        if reply.status == 503 and not required:
            return None
        raise _ERRORS.get(reply.status, IpamUnavailable)(f"IPAM: {text}", path=path, status=reply.status)


def _seg(ident: str) -> str:
    return quote(ident, safe=":")
