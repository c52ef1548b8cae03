"""The `nameserver` gossip payload on the wire (weave:nameserver/entry.go `GossipData`).

Go types, as gob sees them:

    type GossipData struct { Timestamp int64; Entries }   // Entries embedded
    type Entries []Entry
    type Entry struct {
        ContainerID string; Origin mesh.PeerName /* uint64 */; Addr address.Address /* uint32 */
        Hostname string; Version int; Tombstone int64
    }

so Origin and Addr travel as gob uint, Version and Tombstone (and Timestamp) as gob
int. Each payload is one fresh gob stream: type definitions, then the value. Entries
are written sorted case-sensitively (Go sorts `CaseSensitive` before encoding), which is
GossipData's own order, and read into it.

Periodic gossip carries every entry of the cluster, tombstones included (kept 30
minutes), every 30 s each way. Both directions therefore work one entry at a time: an
entry's gob dict is made as it is written and turned into a DnsEntry as soon as it is
read (the store's own object when the store holds it unchanged, which most of a round
is), and entries of one origin share its PeerName. Holding every entry's dict at once,
and a sort key for each, had raised the process's memory high-water mark by ~1.6 KB per
entry at each round (issue 15's soak).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise

from services.dns.entry import DnsEntry, EntryKey, GossipData
from shared.weave.peer_name import NAME_MASK, PeerName
from shared import gob
from shared.errors import RemoteProtocolError

ENTRY = gob.Struct("Entry", (
    ("ContainerID", gob.STRING),
    ("Origin", gob.UINT),
    ("Addr", gob.UINT),
    ("Hostname", gob.STRING),
    ("Version", gob.INT),
    ("Tombstone", gob.INT),
))
ENTRIES = gob.Slice(ENTRY, name="Entries")
GOSSIP_DATA = gob.Struct("GossipData", (("Timestamp", gob.INT), ("Entries", ENTRIES)))

_ADDR_MAX = 0xFFFFFFFF


def encode(data: GossipData, encoder: gob.Encoder | None = None) -> bytes:
    """One payload, as Go's `GossipData.Encode` writes it. `encoder` defaults to a fresh
    one (as Go uses); passing another only changes which type ids the stream uses."""
    entries = data.entries
    if any(a.key > b.key for a, b in pairwise(entries)):
        entries = sorted(entries, key=DnsEntry.wire_sort_key)
    value = {"Timestamp": data.timestamp, "Entries": _GobEntries(entries)}
    return (encoder or gob.Encoder()).encode(GOSSIP_DATA, value)


def decode(payload: bytes, known: Callable[[EntryKey], DnsEntry | None] | None = None) -> GossipData:
    """Parse one payload from a peer. `known`: the store's lookup by identity; an entry
    equal to the store's is replaced by the store's own object as it is read, so a
    round of periodic gossip (mostly entries we already hold) keeps no copy of them.

    Raises `gob.GobError` (a RemoteProtocolError) for malformed gob, and
    RemoteProtocolError for values Go would not produce: an Addr beyond 32 bits, an
    Origin beyond the 48 bits of a peer name (code `bad_entry`), or the same entry
    twice (code `duplicate_entry`; a Go peer would panic on it)."""
    origins: dict[int, PeerName] = {}
    value = gob.decode(payload, GOSSIP_DATA, make={ENTRY: lambda v: _from_gob(v, origins, known)})
    entries = value["Entries"]
    data = GossipData.of(value["Timestamp"], entries)
    if len(data.entries) != len(entries):
        raise RemoteProtocolError("nameserver gossip lists an entry twice",
                                  code="duplicate_entry", entries=len(entries))
    return data


class _GobEntries(Sequence):
    """Entries as gob dicts, each made when the encoder reads it."""

    def __init__(self, entries: Sequence[DnsEntry]) -> None:
        self._entries = entries

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, i):
        return _to_gob(self._entries[i])


def _to_gob(e: DnsEntry) -> dict:
    return {"ContainerID": e.container_id, "Origin": e.origin, "Addr": e.addr,
            "Hostname": e.hostname, "Version": e.version, "Tombstone": e.tombstone}


def _from_gob(v: dict, origins: dict[int, PeerName],
              known: Callable[[EntryKey], DnsEntry | None] | None) -> DnsEntry:
    if v["Addr"] > _ADDR_MAX or v["Origin"] > NAME_MASK:
        raise RemoteProtocolError(
            f"entry {v['Hostname']!r} has Addr {v['Addr']} or Origin {v['Origin']} out of range",
            code="bad_entry", addr=v["Addr"], origin=v["Origin"])
    origin = origins.get(v["Origin"])
    if origin is None:
        origin = origins[v["Origin"]] = PeerName(v["Origin"])
    entry = DnsEntry(container_id=v["ContainerID"], origin=origin, addr=v["Addr"],
                     hostname=v["Hostname"], version=v["Version"], tombstone=v["Tombstone"])
    mine = known(entry.key) if known is not None else None
    return mine if mine == entry else entry
