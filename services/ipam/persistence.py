"""Persistence snapshots of an allocator: plain data a shell can store as JSON.

Weave keeps `peername`, `ring` and `ownedAddresses` in BoltDB; we keep the same three
things (and the range) in one dict. As in Weave, a stored ring is used only if it was
written under the same peer name and for the same range; otherwise everything stored
is discarded, addresses included (they belonged to another identity or range).
"""
from __future__ import annotations

from typing import Mapping

from shared.weave.peer_name import PeerName
from services.ipam.address import CIDR, AddressError, parse_cidr
from services.ipam.errors import InvalidRingError
from services.ipam.owned import Owned
from services.ipam.ring import Ring

SNAPSHOT_VERSION = 1


def make_snapshot(peer_name: PeerName, universe: CIDR, ring: Ring, owned: Owned) -> dict:
    return {"version": SNAPSHOT_VERSION, "peer_name": str(peer_name), "range": str(universe),
            "ring": ring.to_dict(), "owned": owned.to_dict()}


def make_delta(peer_name: PeerName, universe: CIDR, ring: Ring, owned: Owned) -> dict:
    """A snapshot of what changed since the last delta, for a store that writes only
    that: the same keys, but `owned` holds only idents changed since (None: it holds
    nothing now). Taking a delta forgets the changes; `owned.changed(delta["owned"])`
    puts them back if the write fails."""
    return {"version": SNAPSHOT_VERSION, "peer_name": str(peer_name), "range": str(universe),
            "ring": ring.to_dict(), "owned": owned.take_changes()}


def load_snapshot(snapshot: Mapping | None, peer_name: PeerName,
                  universe: CIDR) -> tuple[Ring, Owned] | None:
    """(ring, owned) from a snapshot, or None if it must be discarded."""
    if not snapshot or snapshot.get("version") != SNAPSHOT_VERSION or not snapshot.get("ring"):
        return None
    try:
        if PeerName.parse(snapshot["peer_name"]) != peer_name or parse_cidr(snapshot["range"]) != universe:
            return None
        ring = Ring.from_dict(snapshot["ring"]).copy(peer=peer_name)
        if ring.range != universe.range():
            return None
        ring.check_entries(ring.entries)
        return ring, Owned.from_dict(snapshot.get("owned") or {})
    except (KeyError, TypeError, ValueError, AddressError, InvalidRingError):
        return None
