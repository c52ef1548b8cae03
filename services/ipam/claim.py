"""Claiming a specific address (weave:ipam/claim.go).

| where the address is                  | what happens                                   |
|---------------------------------------|------------------------------------------------|
| outside the universe                  | recorded as owned (once), success              |
| ring empty                            | wait for a ring (success at once with          |
|                                       |   `no_error_on_unknown`, still recorded later) |
| owned by another, reachable peer      | SpaceRequest for that one address; the owner   |
|                                       |   donates it (we retry) or denies (we fail)    |
| owned by an unreachable peer          | retry; fail after MAX_UNREACHABLE_TRIES        |
| ours, free                            | claimed, success                               |
| ours, held by the same ident          | success (idempotent)                           |
| ours, held by another ident           | error `in_use`                                 |
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable

from shared.weave.peer_name import UNKNOWN_PEER_NAME, PeerName
from services.ipam.address import CIDR, Range, format_ip
from services.ipam.allocate import cancelled
from services.ipam.errors import RequestError
from services.ipam.owned import NO_CONTAINER_ID
from services.ipam.allocator_state import AllocatorState


MAX_UNREACHABLE_TRIES = 5


@dataclass
class Claim:
    request_id: Hashable
    ident: str
    cidr: CIDR
    is_container: bool = True
    no_error_on_unknown: bool = False
    replied: bool = False
    unreachable_tries: int = 0

    def send_result(self, alloc: AllocatorState, error: RequestError | None = None) -> None:
        """Reply once; later outcomes of a provisional success are not reported."""
        if not self.replied:
            self.replied = True
            alloc.reply(self.request_id, None, error)

    def try_(self, alloc: AllocatorState) -> bool:
        addr = self.cidr.addr
        if not alloc.ring.contains(addr):
            if not alloc.owned.in_range(self.ident, Range.of(addr, 1)):  # Weave would record it twice
                alloc.add_owned(self.ident, self.cidr, self.is_container)  # user knows best
            self.send_result(alloc)
            return True
        alloc.establish_ring()
        alloc.dead.pop(self.ident, None)
        owner = alloc.ring.owner(addr)
        if owner == alloc.our_name:
            self._claim_ours(alloc)
            return True
        if owner == UNKNOWN_PEER_NAME:
            if self.no_error_on_unknown:
                self.send_result(alloc)
            return False
        return self._ask_owner(alloc, owner)

    def _ask_owner(self, alloc: AllocatorState, owner: PeerName) -> bool:
        if alloc.send_space_request(owner, Range.of(self.cidr.addr, 1)):
            return False
        self.unreachable_tries += 1
        if self.no_error_on_unknown:
            self.send_result(alloc)
        if self.unreachable_tries < MAX_UNREACHABLE_TRIES:
            return False
        self.denied_by(alloc, owner)
        return True

    def _claim_ours(self, alloc: AllocatorState) -> None:
        addr, ident = self.cidr.addr, self.ident
        existing = alloc.owned.find_owner(addr)
        if existing == "":
            if not alloc.space.is_free(addr):
                self.send_result(alloc, RequestError(f"Address {format_ip(addr)} is not free to claim",
                                                     code="in_use"))
                return
            alloc.space.claim(addr)
            alloc.add_owned(format_ip(addr) if ident == NO_CONTAINER_ID else ident, self.cidr,
                            self.is_container)
            self.send_result(alloc)
        elif existing == ident or (ident == NO_CONTAINER_ID and existing == format_ip(addr)):
            self.send_result(alloc)  # the same ident claims it again
        elif existing == format_ip(addr):
            self.send_result(alloc, RequestError(f"address {self.cidr} already in use", code="in_use"))
        elif ident == NO_CONTAINER_ID:
            self.send_result(alloc)  # cannot prove it is another container
        else:
            self.send_result(alloc, RequestError(
                f"address {self.cidr} is already owned by {existing}", code="in_use", owner=existing))

    def denied_by(self, alloc: AllocatorState, owner: PeerName) -> None:
        nickname = alloc.nicknames.get(owner)
        name = f"{owner} ({nickname})" if nickname else str(owner)
        self.send_result(alloc, RequestError(
            f"address {self.cidr} is owned by other peer {name}", code="owned_by_other_peer", owner=owner))

    def cancel(self, alloc: AllocatorState) -> None:
        self.send_result(alloc, cancelled("Claim", self.ident))


def deny_claims(alloc: AllocatorState, owner: PeerName, r: Range) -> None:
    """The owner of r refused to give it up: pending claims in r fail."""
    for claim in [c for c in alloc.pending_claims if r.contains(c.cidr.addr)]:
        alloc.pending_claims.remove(claim)
        claim.denied_by(alloc, owner)
