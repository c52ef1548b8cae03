"""The datapath's use of IPAM: the ipam service's bus API (shared/schemas/ipam.py),
what `weave attach` asks of a Weave router's IPAM (allocate, claim, release).

- `allocate` needs IPAM: when no ipam service runs it raises `IpamUnavailable` saying
  what to do instead (give an explicit address).
- `claim` (an explicit address) works without IPAM: it returns False when no ipam
  service runs, True when IPAM recorded the claim; IPAM refusing it (the address is
  held by another container) raises its error (conflict, bad_request, ...).
- `release` is best effort: a detach never fails because IPAM is away.
Errors keep IPAM's codes and say that IPAM gave them.
"""
from __future__ import annotations

import logging

from services.datapath.netns import DatapathError
from services.datapath.records import EXPOSE_ID
from shared import subjects
from shared.bus import Bus, BusError
from shared.schemas import HealthReply, HealthRequest, Ok
from shared.schemas.ipam import AllocateReply, AllocateRequest, ClaimRequest, ReleaseRequest

log = logging.getLogger(__name__)

WAIT_S = 25.0
"""How long IPAM may take (consensus, a peer donating space); it answers before then."""
RELEASE_TIMEOUT_S = 5.0


class IpamUnavailable(DatapathError):
    code = "unavailable"


class Ipam:
    def __init__(self, bus: Bus) -> None:
        self.bus = bus

    async def allocate(self, ident: str, subnet: str | None) -> str:
        """A fresh address `ip/len` for `ident` in `subnet` (None: IPAM's default subnet)."""
        req = AllocateRequest(ident=ident, subnet=subnet, is_container=ident != EXPOSE_ID, wait_s=WAIT_S)
        try:
            reply = await self.bus.request(subjects.request("ipam", "allocate"), req, AllocateReply,
                                           timeout=WAIT_S + 5)
        except BusError as exc:
            if await self._absent(exc):
                raise IpamUnavailable("IPAM is not running, so no address can be allocated: give an explicit "
                                      "address (e.g. 10.32.1.1/12) or check 'weave status ipam'") from exc
            raise _error(exc) from exc
        return reply.cidr

    async def claim(self, ident: str, cidr: str) -> bool:
        """Record `cidr` as held by `ident`. False: no IPAM runs here (nothing recorded)."""
        req = ClaimRequest(ident=ident, cidr=cidr, is_container=ident != EXPOSE_ID, no_error_on_unknown=True,
                           wait_s=WAIT_S)
        try:
            await self.bus.request(subjects.request("ipam", "claim"), req, Ok, timeout=WAIT_S + 5)
        except BusError as exc:
            if await self._absent(exc):
                return False
            raise _error(exc) from exc
        return True

    async def release(self, ident: str, ip: str | None = None) -> None:
        """Free one address of `ident` (`ip` without a length), or all of them."""
        try:
            await self.bus.request(subjects.request("ipam", "release"), ReleaseRequest(ident=ident, addr=ip), Ok,
                                   timeout=RELEASE_TIMEOUT_S)
        except BusError as exc:  # not held (any more), or IPAM away: nothing to free here
            log.info("IPAM release of %s for %s: %s", ip or "everything", ident, exc.description)

    async def _absent(self, exc: BusError) -> bool:
        """Whether `exc` means no ipam service runs (rather than IPAM saying no)."""
        if exc.code != "unavailable":
            return False
        try:
            await self.bus.request(subjects.health("ipam"), HealthRequest(), HealthReply, timeout=2.0)
        except BusError:
            return True
        return False


def _error(exc: BusError) -> DatapathError:
    if exc.code == "timeout":
        return IpamUnavailable(f"IPAM did not answer within {WAIT_S + 5:g} s: check 'weave status ipam'")
    return DatapathError(f"IPAM: {exc.description}", code=exc.code)
