"""The weaveDNS store: every peer's entries, merged by gossip (weave:nameserver/nameserver.go).

Rules (weave-spec §7):
- Only the origin peer changes its entries: it adds them (version 0, or version+1 when
  reviving a tombstone) and tombstones them (version+1, Tombstone = now).
- Incoming gossip is refused whole if its Timestamp is more than 15 min from `now`.
  Entries whose Origin is not a known peer are dropped. Entries claiming to come from
  us that disagree with our own state are overridden: we re-assert our state with
  version = theirs + 1 (tombstoning those we do not have) and broadcast the result.
- Entries of a peer that leaves the topology (peer GC) are deleted; tombstones are
  deleted 30 min after their Tombstone time.

The store is a plain synchronous object: time comes in as `now` (unix seconds) and
what must be sent comes back as `GossipData` values. The query path reads two indexes
kept up to date on every change, so answering never sorts or scans.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from services.dns.entry import (
    GOSSIP_WINDOW_S,
    TOMBSTONE_TIMEOUT_S,
    DnsEntry,
    EntryKey,
    GossipData,
    in_wire_order,
)
from shared.config import LaunchConfig
from shared.weave.peer_name import PeerName
from shared.errors import RemoteProtocolError
from shared.weave.dns_names import fqdn, is_subdomain  # noqa: F401 (part of this module's API)

DEFAULT_DOMAIN: str = LaunchConfig.model_fields["dns_domain"].default
"""weaveDNS's domain unless --dns-domain says otherwise (LaunchConfig.dns_domain)."""


@dataclass(frozen=True, slots=True)
class GossipOutcome:
    """What receiving one gossip message produced.

    `new`: entries that changed our state (what mesh `OnGossip` returns for onward
    gossip), None if nothing did. `received`: the message after dropping unknown
    origins and re-asserting ours (what `OnGossipBroadcast` relays). `broadcast`: our
    own entries we had to re-assert, to broadcast (tag 6), None if none.
    """

    new: GossipData | None
    received: GossipData
    broadcast: GossipData | None


class Nameserver:
    """All entries of the cluster, indexed for lookups by name and by address."""

    def __init__(self, our_name: PeerName, domain: str = DEFAULT_DOMAIN,
                 known_peers: Iterable[PeerName] = (), tombstone_timeout_s: int = TOMBSTONE_TIMEOUT_S) -> None:
        """`tombstone_timeout_s`: how long tombstones are kept (Weave: 30 min; shorter in
        the test profile). The clock-skew window for gossip stays Weave's 15 min."""
        self.our_name = PeerName(our_name)
        self.tombstone_timeout_s = int(tombstone_timeout_s)
        self.domain = fqdn(domain)
        self._known: set[int] = {int(self.our_name), *map(int, known_peers)}
        self._entries: dict[EntryKey, DnsEntry] = {}
        self._by_name: dict[str, dict[EntryKey, DnsEntry]] = {}
        self._by_addr: dict[int, set[EntryKey]] = {}
        """Live entries only, by lower-cased name and by address: what answers need. A
        tombstone (kept 30 minutes) is in `_entries` alone, ~0.6 KB, not ~1 KB."""
        self._live: dict[str, tuple[int, ...]] = {}
        self._reverse: dict[int, str] = {}
        self._sorted: tuple[DnsEntry, ...] | None = None
        self.generation = 0
        """Bumped by every change of what a query can see (answer caches compare it)."""

    # ---- queries -------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, hostname: str) -> tuple[int, ...]:
        """Addresses of the live entries named `hostname` (any case), in stored order;
        empty if there are none."""
        return self._live.get(hostname.lower(), ())

    def lookup_lower(self, lower_hostname: str) -> tuple[int, ...]:
        """`lookup` for a name the caller already lower-cased (the query fast path)."""
        return self._live.get(lower_hostname, ())

    def reverse_lookup(self, addr: int) -> str | None:
        """Hostname of the first live entry (stored order) with `addr`, else None."""
        return self._reverse.get(addr)

    def entries(self) -> tuple[DnsEntry, ...]:
        """Every entry, tombstones included, in stored (case-insensitive) order."""
        if self._sorted is None:
            self._sorted = tuple(sorted(self._entries.values(), key=DnsEntry.sort_key))
        return self._sorted

    def unordered(self) -> tuple[DnsEntry, ...]:
        """Every entry, tombstones included, in no particular order: what the snapshot
        writes about once a second while names change (sorting builds a key per entry,
        so its peak, and the process's high-water mark, grew with the tombstones)."""
        return tuple(self._entries.values())

    def get(self, key: EntryKey) -> DnsEntry | None:
        return self._entries.get(key)

    def report(self, *, upstream: Sequence[str] | None, address: str, ttl: int) -> dict:
        """/report `DNS` section: `{Domain, Upstream, Address, TTL, Entries}`; Go's nil
        slices appear as None (JSON null)."""
        entries = [e.to_status() for e in self.entries()]
        return {"Domain": self.domain, "Upstream": list(upstream) if upstream is not None else None,
                "Address": address, "TTL": ttl, "Entries": entries or None}

    # ---- local changes (we are the origin) -----------------------------------------

    def add(self, hostname: str, container_id: str, addr: int, now: float) -> GossipData:
        """Register our entry (reviving it if tombstoned); returns it for broadcast,
        even when nothing changed, as Go does."""
        entry = DnsEntry(container_id, self.our_name, addr, hostname)
        old = self._entries.get(entry.key)
        if old is not None:
            entry = old.revived() if not old.live else old
        if entry is not old:
            self._put(entry)
        return GossipData(int(now), (entry,))

    def add_fqdn(self, name: str, container_id: str, addr: int, now: float) -> GossipData | None:
        """`add` for a name given by a user: made fully qualified, and ignored (None)
        unless it lies within our domain."""
        hostname = fqdn(name)
        if not is_subdomain(self.domain, hostname):
            return None
        return self.add(hostname, container_id, addr, now)

    def delete(self, now: float, hostname: str | None = None, container_id: str | None = None,
               addr: int | None = None) -> GossipData | None:
        """Tombstone our live entries matching every given field (None = any; the
        hostname compares exactly). Returns the tombstones to broadcast, or None."""
        def match(e: DnsEntry) -> bool:
            return ((hostname is None or e.hostname == hostname)
                    and (container_id is None or e.container_id == container_id)
                    and (addr is None or e.addr == addr))
        return self._tombstone_ours(match, now)

    def container_died(self, container_id: str, now: float) -> GossipData | None:
        """Tombstone every live entry of ours for that container."""
        return self._tombstone_ours(lambda e: e.container_id == container_id, now)

    def _tombstone_ours(self, match: Callable[[DnsEntry], bool], now: float) -> GossipData | None:
        doomed = [e for e in self._entries.values()
                  if e.origin == self.our_name and e.live and match(e)]
        done = [e.tombstoned(int(now)) for e in doomed]
        for e in done:
            self._put(e)
        return GossipData.of(now, done) if done else None

    # ---- peers ---------------------------------------------------------------------

    def set_known_peers(self, peers: Iterable[PeerName]) -> int:
        """Replace the set of peers in the topology (ours is always in it) and delete
        the entries of every peer no longer in it (peer GC). Must be called with the
        topology before gossip is delivered, or that gossip's entries are dropped.
        Returns how many entries were deleted."""
        self._known = {int(self.our_name), *map(int, peers)}
        return self._drop_where(lambda e: int(e.origin) not in self._known)

    def peer_gone(self, peer: PeerName) -> int:
        """A peer was garbage-collected from the topology: forget it and its entries."""
        if peer != self.our_name:
            self._known.discard(int(peer))
        return self._drop_where(lambda e: e.origin == peer and e.origin != self.our_name)

    def is_known_peer(self, peer: PeerName) -> bool:
        return int(peer) in self._known

    # ---- gossip --------------------------------------------------------------------

    def gossip(self, now: float) -> GossipData:
        """Our full state, for periodic gossip and for new connections, in wire order
        (`entries()` would build a sort key for each entry, and keep the sorted copy)."""
        return GossipData(int(now), in_wire_order(self._entries))

    def on_gossip(self, data: GossipData, now: float) -> GossipOutcome:
        """Receive one decoded gossip or broadcast message.

        Raises RemoteProtocolError (code `clock_skew`, with `delta` and `limit`) when
        the sender's clock is too far from ours; the state is then untouched."""
        delta = data.timestamp - int(now)
        if abs(delta) > GOSSIP_WINDOW_S:
            raise RemoteProtocolError(
                f"host clock skew of {delta}s exceeds {GOSSIP_WINDOW_S}s limit",
                code="clock_skew", delta=delta, limit=GOSSIP_WINDOW_S)
        known = [e for e in data.entries if int(e.origin) in self._known]
        received, overridden = self._reassert_ours(known, int(now))
        new = self.merge(received)
        return GossipOutcome(
            new=GossipData(int(now), new) if new else None,
            received=GossipData(data.timestamp, tuple(received)),
            broadcast=GossipData.of(now, overridden) if overridden else None)

    def _reassert_ours(self, entries: list[DnsEntry], now: int) -> tuple[list[DnsEntry], list[DnsEntry]]:
        """Replace claims about our entries that disagree with our state by our state
        at a higher version; entries of ours we do not have are tombstoned."""
        out, overridden = [], []
        for e in entries:
            if e.origin == self.our_name:
                mine = self._entries.get(e.key)
                if mine is None and e.live:
                    e = e.tombstoned(now)
                    overridden.append(e)
                elif mine is not None and (mine.version < e.version or (
                        mine.version == e.version and mine.tombstone != e.tombstone)):
                    e = mine.with_version(e.version + 1)
                    overridden.append(e)
            out.append(e)
        return out, overridden

    def merge(self, entries: Iterable[DnsEntry]) -> tuple[DnsEntry, ...] | None:
        """Merge entries into the store; returns the ones that changed it, or None."""
        new = []
        for e in entries:
            old = self._entries.get(e.key)
            if old is None or e.wins_over(old):
                self._put(e)
                new.append(e)
        return tuple(new) or None

    # ---- time ----------------------------------------------------------------------

    def delete_tombstones(self, now: float) -> int:
        """Delete tombstones older than the tombstone timeout (30 min); returns how many."""
        limit = int(now) - self.tombstone_timeout_s
        return self._drop_where(lambda e: not e.live and e.tombstone < limit)

    def next_deadline(self) -> int | None:
        """When `delete_tombstones` next has work (unix seconds), or None."""
        stones = [e.tombstone for e in self._entries.values() if not e.live]
        return min(stones) + self.tombstone_timeout_s + 1 if stones else None

    # ---- indexes -------------------------------------------------------------------

    def _put(self, entry: DnsEntry) -> None:
        key, lname = entry.key, entry.hostname.lower()
        self._entries.pop(key, None)  # (so that the dict's key is this entry's own tuple, not a second one)
        self._entries[key] = entry
        if entry.live:
            self._by_name.setdefault(lname, {})[key] = entry
            self._by_addr.setdefault(entry.addr, set()).add(key)
        else:
            _discard(self._by_name, lname, key)
            _discard(self._by_addr, entry.addr, key)
        self._reindex(lname, entry.addr)

    def _drop_where(self, doomed: Callable[[DnsEntry], bool]) -> int:
        victims = [e for e in self._entries.values() if doomed(e)]
        for e in victims:
            key, lname = e.key, e.hostname.lower()
            del self._entries[key]
            _discard(self._by_name, lname, key)
            _discard(self._by_addr, e.addr, key)
            self._reindex(lname, e.addr)
        return len(victims)

    def _reindex(self, lname: str, addr: int) -> None:
        self._sorted = None
        self.generation += 1
        named = sorted(self._by_name.get(lname, {}).values(), key=DnsEntry.sort_key)
        _set_or_pop(self._live, lname, tuple(e.addr for e in named))
        at_addr = (self._entries[k] for k in self._by_addr.get(addr, ()))
        first = min(at_addr, key=DnsEntry.sort_key, default=None)
        _set_or_pop(self._reverse, addr, first.hostname if first else None)


def _discard(index: dict, bucket, key) -> None:
    members = index.get(bucket)
    if members is None:
        return
    if isinstance(members, dict):
        members.pop(key, None)
    else:
        members.discard(key)
    if not members:
        del index[bucket]


def _set_or_pop(index: dict, key, value) -> None:
    if value:
        index[key] = value
    else:
        index.pop(key, None)
