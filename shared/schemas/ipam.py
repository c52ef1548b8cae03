"""The ipam service's bus API (`weave.ipam.<verb>`), for the datapath, the CNI plugin and
the CLI. Weave's HTTP routes (POST /ip/{id} ...) go over `weave.ipam.http` instead
(shared/schemas/http.py).

Requests that may have to wait (allocate, claim, prime: no ring yet, or space asked of
a peer) carry `wait_s`: how long the caller will wait. The service answers before then,
with the result or with an `unavailable` error naming what it is waiting for, and drops
the pending operation: nothing is left behind for a caller that has gone away. Callers
use a bus timeout a little above `wait_s`.

Error codes: `bad_request` (malformed address, CIDR or subnet; subnet smaller than 4
addresses; out of the range), `not_found` (no such container, address or peer),
`conflict` (the address is held by another container or owned by another peer),
`unavailable` (still waiting when `wait_s` ran out; the service is stopping or left).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.schemas.base import Message, PeerNameField

DEFAULT_WAIT_S = 25.0  # under shared.http_bus.FORWARD_TIMEOUT_S, so an HTTP caller gets our answer


class AllocateRequest(Message):
    """weave.ipam.allocate: an address for a container (the same one again if it has one)."""

    ident: str = Field(description="Container ID (or another ident, e.g. weave:expose).")
    subnet: str | None = Field(None, description="Subnet a.b.c.d/n to allocate in; None = the default subnet.")
    is_container: bool = Field(True, description="False for idents that are not containers (never pruned).")
    wait_s: float = Field(DEFAULT_WAIT_S, gt=0, le=3600, description="Seconds the caller will wait for an answer.")


class AllocateReply(Message):
    cidr: str = Field(description="The address with the subnet's prefix length, a.b.c.d/n.")


class ClaimRequest(Message):
    """weave.ipam.claim: a specific address for a container (Weave's PUT /ip/{id}/{ip}/{len})."""

    ident: str = Field(description="Container ID (or another ident).")
    cidr: str = Field(description="The address with its prefix length, a.b.c.d/n.")
    is_container: bool = Field(True, description="False for idents that are not containers.")
    no_error_on_unknown: bool = Field(False, description="Succeed at once while there is no ring yet "
                                                         "(re-claims at start).")
    wait_s: float = Field(DEFAULT_WAIT_S, gt=0, le=3600, description="Seconds the caller will wait for an answer.")


class ReleaseRequest(Message):
    """weave.ipam.release: free one address of a container, or all of them."""

    ident: str = Field(description="Container ID (or another ident).")
    addr: str | None = Field(None, description="a.b.c.d to free; None = every address the ident holds.")


class LookupRequest(Message):
    """weave.ipam.lookup: the addresses a container holds."""

    ident: str = Field(description="Container ID (or another ident).")
    subnet: str | None = Field(None, description="Only addresses in this subnet a.b.c.d/n; None = anywhere.")


class LookupReply(Message):
    cidrs: tuple[str, ...] = Field(description="Addresses held, a.b.c.d/n each, in allocation order.")


class PrimeRequest(Message):
    """weave.ipam.prime: make sure there is a ring (Weave's GET /ring, `weave prime`)."""

    wait_s: float = Field(DEFAULT_WAIT_S, gt=0, le=3600, description="Seconds the caller will wait for a ring.")


class RmpeerRequest(Message):
    """weave.ipam.rmpeer: take over every range of a dead peer (`weave rmpeer`)."""

    peer: str = Field(description="Peer name (aa:bb:cc:dd:ee:ff) or nickname.")


class RmpeerReply(Message):
    peer: str = Field(description="The peer as given.")
    taken_over: int = Field(description="Free addresses we gained (Weave's 'N IPs taken over from X').")


class StatusRequest(Message):
    """weave.ipam.status: the allocator's state at a glance."""


class RingEntryInfo(Message):
    """One range of the ring (Weave's /report IPAM.Entries row)."""

    token: str = Field(description="First address of the range.")
    size: int = Field(description="Addresses in the range.")
    peer: PeerNameField = Field(description="Owner's peer name.")
    nickname: str = Field(description="Owner's nickname, '' if unknown.")
    reachable: bool = Field(description="The owner is us or reachable over the mesh.")
    version: int = Field(description="Entry version (bumped by every change the owner makes).")


class StatusReply(Message):
    status: str = Field(description="Weave's Status line: idle, priming, awaiting consensus (...), ready, ...")
    range: str = Field(description="The IPAM universe (--ipalloc-range).")
    range_num_ips: int = Field(description="Addresses in the universe.")
    default_subnet: str = Field(description="Subnet used when a request names none.")
    active_ips: int = Field(description="Addresses allocated on this peer.")
    entries: tuple[RingEntryInfo, ...] = Field(description="The ring; empty before consensus.")
    pending_allocates: int = Field(description="Allocations waiting.")
    pending_claims: int = Field(description="Claims waiting.")
    mode: Literal["consensus", "seed", "observer"] = Field(description="--ipalloc-init mode.")
    quorum: int = Field(description="Electors needed for consensus (0 for an observer or a seed).")
    left: bool = Field(False, description="DELETE /peer handed our ranges over; no more requests are served.")
    refused: str = Field("", description="The last gossip we refused (e.g. different seeds), '' if none.")
