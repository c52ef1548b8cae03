"""IPAM errors, each saying who is at fault (STYLE.md rule 10).

- `RingError` and its kinds: a ring (or gossip about one) from another peer that we
  refuse. They are `RemoteProtocolError`s: the message is dropped, our state is
  unchanged, the connection stays up. Messages follow Weave's wording so that logs
  read the same as a Go router's.
- `RequestError`: a local request (HTTP/CLI/bus) that cannot be served. `code` is a
  short machine-readable reason the shell maps to a reply.
"""
from __future__ import annotations

from shared.errors import RemoteProtocolError, WeaveError


class RingError(RemoteProtocolError):
    """A received ring cannot be merged into ours; nothing was changed."""

    code = "ring_conflict"


class InvalidRingError(RingError):
    """The ring breaks its own invariants (unsorted, repeated token, out of range...)."""

    code = "invalid_ring"


class DifferentSeedsError(RingError):
    """Weave's ErrDifferentSeeds: the two rings were initialised independently."""

    code = "different_seeds"


class DifferentRangeError(RingError):
    """Weave's ErrDifferentRange: the two peers run with different --ipalloc-range."""

    code = "different_range"


class RequestError(WeaveError):
    """A local IPAM request failed; no state was changed.

    Codes: `bad_request` (malformed address/CIDR/subnet), `out_of_range`,
    `not_found` (unknown container or address), `in_use`, `owned_by_other_peer`,
    `cancelled`, `unknown_peer`.
    """

    code = "bad_request"
