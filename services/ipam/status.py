"""What an allocator shows: the `Status:` line of `weave status` and the IPAM part of
`/report` (weave:ipam/status.go, weave:prog/weaver/http.go), with Weave's field names.

Status line, as the weaver's status template decides it:
- ring has entries: "all IP ranges owned by unreachable peers - use 'rmpeer' if they
  are dead" if no reachable peer (us included) owns any space; else "waiting for IP
  range grant from peers" while allocations are pending; else "ready";
- no ring, election running: "awaiting consensus (quorum: Q, known: N)" for an
  elector, "priming" for an observer;
- otherwise "idle".
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from services.ipam.address import format_ip

if TYPE_CHECKING:
    from services.ipam.allocator import Allocator

UNREACHABLE = "all IP ranges owned by unreachable peers - use 'rmpeer' if they are dead"
WAITING = "waiting for IP range grant from peers"


def paxos_report(alloc: "Allocator") -> dict | None:
    if not alloc.awaiting_consensus or alloc.paxos is None:
        return None
    s = alloc.paxos.status()
    return {"Elector": s.elector, "KnownNodes": s.known_nodes, "Quorum": s.quorum}


def entries_report(alloc: "Allocator") -> list[dict] | None:
    rows = [{"Token": format_ip(r.start), "Size": r.size, "Peer": str(peer),
             "Nickname": alloc.nicknames.get(peer, ""), "IsKnownPeer": alloc.is_known_peer(peer),
             "Version": version}
            for peer, r, version in alloc.ring.all_range_info()]
    return rows or None


def report(alloc: "Allocator") -> dict:
    """The `IPAM` object of /report (nil slices as None, as Go's JSON has them)."""
    claims = [{"Ident": c.ident, "CIDR": {"Addr": format_ip(c.cidr.addr), "PrefixLen": c.cidr.prefix_len}}
              for c in alloc.pending_claims]
    allocates = [a.describe() for a in alloc.pending_allocates]
    return {
        "Paxos": paxos_report(alloc),
        "Range": str(alloc.universe),
        "RangeNumIPs": alloc.universe.size,
        "ActiveIPs": alloc.space.num_owned(),
        "DefaultSubnet": str(alloc.config.default_subnet),
        "Entries": entries_report(alloc),
        "PendingClaims": claims or None,
        "PendingAllocates": allocates or None,
    }


def status_line(ipam: dict) -> str:
    """The `Status:` value for a report() dict."""
    if ipam["Entries"]:
        if not any(e["Size"] > 0 and e["IsKnownPeer"] for e in ipam["Entries"]):
            return UNREACHABLE
        return WAITING if ipam["PendingAllocates"] else "ready"
    paxos = ipam["Paxos"]
    if paxos is not None:
        if paxos["Elector"]:
            return f"awaiting consensus (quorum: {paxos['Quorum']}, known: {paxos['KnownNodes']})"
        return "priming"
    return "idle"


def status(alloc: "Allocator") -> str:
    return status_line(report(alloc))
