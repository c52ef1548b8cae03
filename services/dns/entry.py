"""weaveDNS entries and the gossip value that carries them (weave:nameserver/entry.go).

A `DnsEntry` says "container `container_id` on peer `origin` answers to `hostname` at
`addr`". Its identity is (Hostname, Origin, ContainerID, Addr), with the hostname
compared exactly as supplied; `version` and `tombstone` are its mutable state.

Ordering (both orders compare Origin and Addr as numbers, strings by code point,
which is Go's byte order for UTF-8):
- stored and reported: case-insensitively, (lower(Hostname), Origin, ContainerID, Addr),
  ties between hostnames differing only in case broken by the exact hostname;
- gossiped on the wire: case-sensitively, (Hostname, Origin, ContainerID, Addr).

Merge of two states of one entry: the higher Version wins; at equal Version the larger
Tombstone wins. (Version, Tombstone) is therefore a total order and merging is taking
the maximum: idempotent, commutative and associative.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Address
from typing import Iterable

from shared.config import DnsSettings
from shared.weave.peer_name import PeerName
from shared.errors import LocalProtocolError

# Tombstones only need to outlive gossip propagation and the allowed clock skew: 30 min
# of tombstone life (production's DnsSettings.tombstone_timeout_s) covers 15 min of skew
# either way (weave:nameserver/nameserver.go).
TOMBSTONE_TIMEOUT_S = int(DnsSettings().tombstone_timeout_s)
GOSSIP_WINDOW_S = TOMBSTONE_TIMEOUT_S // 2

EntryKey = tuple[str, int, str, int]
"""Identity of an entry: (Hostname, Origin, ContainerID, Addr). Origin is the entry's
PeerName itself (an int, equal and hashing as one), not a new int per key."""


@dataclass(frozen=True, slots=True)
class DnsEntry:
    """One DNS record. `tombstone` is unix seconds of deletion; 0 means live."""

    container_id: str
    origin: PeerName
    addr: int
    """IPv4 address as an unsigned 32-bit number (Go `address.Address`)."""
    hostname: str
    """FQDN as supplied, case preserved (lookups ignore case)."""
    version: int = 0
    tombstone: int = 0
    key: EntryKey = field(init=False, compare=False, repr=False)
    """The identity, made once: the store's dict key and every merge's are this tuple,
    so a tombstone costs no second one and a round of gossip makes none."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", (self.hostname, self.origin, self.container_id, self.addr))

    @property
    def live(self) -> bool:
        return self.tombstone == 0

    def sort_key(self) -> tuple[str, int, str, int, str]:
        """Stored order: case-insensitive hostname first. Go leaves entries differing
        only in hostname case unordered; the exact hostname breaks that tie here, so
        the order (and the first entry for a reverse lookup) never depends on history."""
        return (self.hostname.lower(), self.origin, self.container_id, self.addr, self.hostname)

    def wire_sort_key(self) -> EntryKey:
        """Gossip order: case-sensitive hostname first."""
        return self.key

    def wins_over(self, other: "DnsEntry") -> bool:
        """True if this state of the entry supersedes `other` (same identity)."""
        return (self.version, self.tombstone) > (other.version, other.tombstone)

    def tombstoned(self, now: int) -> "DnsEntry":
        """The deletion of a live entry, as only its origin may make it."""
        if now < 1:
            raise LocalProtocolError("tombstone time must be a positive unix time", now=now)
        return DnsEntry(self.container_id, self.origin, self.addr, self.hostname,
                     self.version + 1, int(now))

    def revived(self) -> "DnsEntry":
        """A tombstoned entry brought back by its origin re-adding it."""
        return DnsEntry(self.container_id, self.origin, self.addr, self.hostname,
                     self.version + 1, 0)

    def with_version(self, version: int) -> "DnsEntry":
        return DnsEntry(self.container_id, self.origin, self.addr, self.hostname,
                     version, self.tombstone)

    @property
    def address(self) -> str:
        return str(IPv4Address(self.addr))

    def to_status(self) -> dict:
        """One element of /report `DNS.Entries` (weave:nameserver/status.go)."""
        return {"Hostname": self.hostname, "Origin": str(self.origin),
                "ContainerID": self.container_id, "Address": self.address,
                "Version": self.version, "Tombstone": self.tombstone}

    def to_api_json(self) -> dict:
        """One element of `GET /name` (Go JSON of Entry: Origin as a number)."""
        return {"ContainerID": self.container_id, "Origin": int(self.origin),
                "Addr": self.address, "Hostname": self.hostname,
                "Version": self.version, "Tombstone": self.tombstone}


def merge_entry(a: DnsEntry, b: DnsEntry) -> DnsEntry:
    """The winning state of one entry (identities must match)."""
    if a.key != b.key:
        raise LocalProtocolError("merging different entries", a=a.key, b=b.key)
    return b if b.wins_over(a) else a


@dataclass(frozen=True, slots=True)
class GossipData:
    """The `nameserver` channel's gossip value: `GossipData{Timestamp int64, Entries}`.

    `entries` are unique by identity and, when made by `of`, `merge` or
    `Nameserver.gossip`, in wire order (by `key`: case-sensitively, as Go sorts them
    before encoding), which sorting by the keys already made for merging gives without
    a sort key per entry; the codec sorts any other order before writing.
    """

    timestamp: int
    entries: tuple[DnsEntry, ...]

    @classmethod
    def of(cls, timestamp: int, entries: Iterable[DnsEntry]) -> "GossipData":
        """Build from entries in any order; duplicates of an identity are merged."""
        return cls(int(timestamp), _merged_sorted({}, entries))

    def merge(self, other: "GossipData") -> "GossipData":
        """Coalesce two pending sends (mesh `GossipData.Merge`): union of entries with
        each identity's winning state, and the later timestamp. Commutative,
        associative and idempotent."""
        by_key = {e.key: e for e in self.entries}
        return GossipData(max(self.timestamp, other.timestamp),
                          _merged_sorted(by_key, other.entries))


def _merged_sorted(by_key: dict[EntryKey, DnsEntry], entries: Iterable[DnsEntry]) -> tuple[DnsEntry, ...]:
    for e in entries:
        key = e.key
        old = by_key.get(key)
        by_key[key] = e if old is None else merge_entry(old, e)
    return in_wire_order(by_key)


def in_wire_order(by_key: dict[EntryKey, DnsEntry]) -> tuple[DnsEntry, ...]:
    """The entries of a dict keyed by their identity, in wire order: sorting the keys,
    which are the entries' own tuples, makes nothing per entry (a sort key would)."""
    return tuple(map(by_key.__getitem__, sorted(by_key)))
