"""Pending operations: allocate and prime (weave:ipam/allocate.go, prime.go).

An operation is tried when it arrives, then again whenever the ring changes and on
every 5 s tick, until `try_` returns True; by then it has replied exactly once.
Claims live in claim.py. `alloc` is the Allocator, seen through its "operation
support" surface (allocator_state.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable

from services.ipam.address import CIDR, format_ip
from services.ipam.errors import RequestError
from services.ipam.owned import NO_CONTAINER_ID
from services.ipam.allocator_state import AllocatorState


def cancelled(kind: str, ident: str) -> RequestError:
    return RequestError(f"{kind} request for {ident} cancelled", code="cancelled", ident=ident)


@dataclass
class Prime:
    """Wait until we have a ring (GET /ring); asks for one if needed."""

    request_id: Hashable
    ident: str = ""

    def try_(self, alloc: AllocatorState) -> bool:
        alloc.establish_ring()  # with a quorum of 1 this makes the ring at once
        if alloc.ring.empty():
            return False
        alloc.reply(self.request_id)
        return True

    def cancel(self, alloc: AllocatorState) -> None:
        alloc.reply(self.request_id, error=cancelled("Prime", "prime"))


@dataclass
class Allocate:
    """A new address for `ident` in `subnet`; replies with the CIDR (addr/prefix)."""

    request_id: Hashable
    ident: str
    subnet: CIDR
    is_container: bool = True

    def try_(self, alloc: AllocatorState) -> bool:
        existing = alloc.owned.in_range(self.ident, self.subnet.range())
        if existing:
            alloc.dead.pop(self.ident, None)  # heard it died; it is back
            alloc.reply(self.request_id, existing[0])
            return True
        if not alloc.universe.range().overlaps(self.subnet.range()):
            alloc.reply(self.request_id, error=RequestError(
                f"range {self.subnet} out of bounds: {alloc.universe}", code="out_of_range"))
            return True
        alloc.establish_ring()
        addr = alloc.space.allocate(self.subnet.host_range())
        if addr is not None:
            self._allocated(alloc, addr)
            return True
        # Weave asks for the whole subnet; a donor may then hand over only its network
        # or broadcast address, which nobody can allocate, and two such peers pass it
        # back and forth forever. We ask for what we can use.
        alloc.ask_for_space(self.subnet.host_range())
        return False

    def _allocated(self, alloc: AllocatorState, addr: int) -> None:
        if self.ident == NO_CONTAINER_ID:
            self.ident = format_ip(addr)
        cidr = self.subnet.with_addr(addr)
        alloc.add_owned(self.ident, cidr, self.is_container)
        alloc.reply(self.request_id, cidr)

    def cancel(self, alloc: AllocatorState) -> None:
        alloc.reply(self.request_id, error=cancelled("Allocate", self.ident))

    def describe(self) -> str:
        return f"{self.ident} {self.subnet}"
