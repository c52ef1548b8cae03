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
are written sorted case-sensitively (Go sorts `CaseSensitive` before encoding) and
read into stored order.
"""
from __future__ import annotations

from services.dns.entry import DnsEntry, GossipData
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
    entries = sorted(data.entries, key=DnsEntry.wire_sort_key)
    value = {"Timestamp": data.timestamp, "Entries": [_to_gob(e) for e in entries]}
    return (encoder or gob.Encoder()).encode(GOSSIP_DATA, value)


def decode(payload: bytes) -> GossipData:
    """Parse one payload from a peer.

    Raises `gob.GobError` (a RemoteProtocolError) for malformed gob, and
    RemoteProtocolError for values Go would not produce: an Addr beyond 32 bits, an
    Origin beyond the 48 bits of a peer name (code `bad_entry`), or the same entry
    twice (code `duplicate_entry`; a Go peer would panic on it)."""
    value = gob.decode(payload, GOSSIP_DATA)
    entries = [_from_gob(v) for v in value["Entries"]]
    data = GossipData.of(value["Timestamp"], entries)
    if len(data.entries) != len(entries):
        raise RemoteProtocolError("nameserver gossip lists an entry twice",
                                  code="duplicate_entry", entries=len(entries))
    return data


def _to_gob(e: DnsEntry) -> dict:
    return {"ContainerID": e.container_id, "Origin": int(e.origin), "Addr": e.addr,
            "Hostname": e.hostname, "Version": e.version, "Tombstone": e.tombstone}


def _from_gob(v: dict) -> DnsEntry:
    if v["Addr"] > _ADDR_MAX or v["Origin"] > NAME_MASK:
        raise RemoteProtocolError(
            f"entry {v['Hostname']!r} has Addr {v['Addr']} or Origin {v['Origin']} out of range",
            code="bad_entry", addr=v["Addr"], origin=v["Origin"])
    return DnsEntry(container_id=v["ContainerID"], origin=PeerName(v["Origin"]), addr=v["Addr"],
                 hostname=v["Hostname"], version=v["Version"], tombstone=v["Tombstone"])
