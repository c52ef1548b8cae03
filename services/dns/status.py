"""weaveDNS's parts of `weave status` and `/report`, in Weave Net's formats
(weave:prog/weaver/http.go `statusTemplate` DNS section and `dnsEntriesTemplate`,
weave:nameserver/status.go)."""
from __future__ import annotations

from typing import Sequence

from services.dns.entry import DnsEntry


def _field(name: str, value: object) -> str:
    return f"{name:>15}: {value}"


def status_text(domain: str, upstream: Sequence[str] | None, ttl: int, entries: Sequence[DnsEntry]) -> str:
    """The `Service: dns` section: Entries counts live entries of every peer."""
    live = sum(1 for e in entries if e.live)
    lines = [
        _field("Service", "dns"),
        _field("Domain", domain),
        _field("Upstream", ", ".join(upstream) if upstream else "none"),
        _field("TTL", ttl),
        _field("Entries", live),
    ]
    return "\n".join(lines) + "\n"


def entries_text(domain: str, entries: Sequence[DnsEntry]) -> str:
    """`weave status dns`: one line per live entry, in stored order: the hostname
    without the domain, the address, the container id cut to 12 characters, the origin."""
    suffix = "." + domain
    out = []
    for e in entries:
        if not e.live:
            continue
        host = e.hostname[: -len(suffix)] if e.hostname.endswith(suffix) else e.hostname
        out.append(f"{host:<12} {e.address:<15} {e.container_id[:12]:>12} {e.origin}\n")
    return "".join(out)


def local_entry_count(entries: Sequence[DnsEntry], our_name: object) -> int:
    """weave_dns_entries: live entries this peer originated (weave:prog/weaver/metrics.go)."""
    return sum(1 for e in entries if e.live and e.origin == our_name)
