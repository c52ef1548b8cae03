"""What an allocator shows: the ipam section of `weave status` with its `Status:` line,
the per-peer lines of `weave status ipam`, the IPAM part of `/report`, and the figures
of Weave's IPAM metrics (weave:ipam/status.go, weave:prog/weaver/http.go, metrics.go),
with Weave's field names and formats.

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


def _field(label: str, value: object) -> str:
    return f"{label:>15}: {value}\n"


def status_text(alloc: "Allocator") -> str:
    """The ipam section of `weave status` (the weaver's status template)."""
    rep = report(alloc)
    return (_field("Service", "ipam") + _field("Status", status_line(rep)) + _field("Range", rep["Range"])
            + _field("DefaultSubnet", rep["DefaultSubnet"]))


def summarise(ipam: dict) -> dict[str, dict]:
    """Per ring peer: addresses owned, nickname, reachable (the weaver's summariseIpamStats)."""
    peers: dict[str, dict] = {}
    for e in ipam["Entries"] or ():
        s = peers.setdefault(e["Peer"], {"ips": 0, "nickname": e["Nickname"], "reachable": e["IsKnownPeer"]})
        s["ips"] += e["Size"]
    return peers


def ranges_text(alloc: "Allocator") -> str:
    """`weave status ipam`: one line per ring peer, ours first with our active count,
    then the others (Go iterates a map; we sort by name), unreachable ones marked."""
    rep = report(alloc)
    peers = summarise(rep)
    us = str(alloc.our_name)

    def line(name: str, s: dict, info: str) -> str:
        share = s["ips"] * 100.0 / rep["RangeNumIPs"]
        return f"{name + '(' + s['nickname'] + ')':<37} {s['ips']:8d} IPs ({share:04.1f}% of total) {info}\n"

    out = [line(us, peers[us], f"({rep['ActiveIPs']} active)")] if us in peers else []
    out += [line(name, s, "" if s["reachable"] else "- unreachable!")
            for name, s in sorted(peers.items()) if name != us]
    return "".join(out)


def unreachable(ipam: dict) -> tuple[int, float]:
    """(peers, percentage of the range) owned by unreachable peers, as Weave's metrics count."""
    lost = [s["ips"] for s in summarise(ipam).values() if not s["reachable"]]
    return len(lost), sum(lost) * 100.0 / ipam["RangeNumIPs"]
