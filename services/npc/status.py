"""npc's views: its section of `weave status`, `weave status npc`, and its /report part.

Weave Net has no NPC section (weave-npc is a separate pod); these follow the router
section's shape (`%15s: value` lines) so `weave status` reads as one document.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from shared.http import HttpRouter, Request, Response
from shared.schemas.npc import ListReply, StatusReply


def _field(label: str, value: object) -> str:
    return f"{label:>15}: {value}"


def status_section(s: StatusReply, now: float | None = None) -> str:
    now = time.time() if now is None else now
    if s.synced:
        sync = f"synced {max(0.0, now - s.last_sync_unix):.0f}s ago"
    else:
        sync = "NOT SYNCED" + (f" (last success {now - s.last_sync_unix:.0f}s ago)" if s.last_sync_unix else "")
    lines = [
        _field("Service", "npc"),
        _field("Policies", f"{s.policies}" + (f" ({s.rejected} rejected)" if s.rejected else "")),
        _field("Namespaces", s.namespaces),
        _field("Pods", f"{s.pods} ({s.local_pods} on this host)"),
        _field("Rules", f"{s.rules} in {s.chains} chains"),
        _field("IPSets", f"{s.ipsets} with {s.ipset_members} members"),
        _field("Netfilter", f"iptables-{s.backend or '?'}, {sync}"),
        _field("Errors", f"{s.enforcement_errors} enforcement errors, {s.blocked_connections} connections blocked"),
    ]
    return "\n".join(lines) + "\n"


def status_view(s: StatusReply, objects: ListReply, pods: list[tuple[str, str, str, str]],
                now: float | None = None) -> str:
    """`weave status npc`: the section, then every policy and every pod (ns, name, ip, peer)."""
    out = [status_section(s, now), "Policies:"]
    for info in objects.objects:
        ref = info.ref
        where = f"{ref.namespace}/{ref.name}" if ref.namespace else ref.name
        state = "enforced" if info.enforced else f"REJECTED: {info.reason}"
        out.append(f"  {ref.kind:<14} {where:<40} {info.source:<10} v{info.version:<4} {state}")
    out.append("Pods:")
    for namespace, name, ip, peer in pods:
        out.append(f"  {namespace + '/' + name:<48} {ip:<16} {peer}")
    return "\n".join(out) + "\n"


def report(s: StatusReply, objects: ListReply) -> dict[str, Any]:
    return {"NPC": {
        "Synced": s.synced, "LastSync": s.last_sync_unix, "Backend": s.backend,
        "Policies": [{"Kind": o.ref.kind, "Namespace": o.ref.namespace, "Name": o.ref.name, "Source": o.source,
                      "Origin": o.origin, "Version": o.version, "Enforced": o.enforced, "Reason": o.reason}
                     for o in objects.objects],
        "Namespaces": s.namespaces, "Pods": s.pods, "LocalPods": s.local_pods, "Rules": s.rules,
        "Chains": s.chains, "IPSets": s.ipsets, "IPSetMembers": s.ipset_members,
        "EnforcementErrors": s.enforcement_errors, "BlockedConnections": s.blocked_connections,
    }}


def router(status: Callable[[], StatusReply], objects: Callable[[], ListReply],
           pods: Callable[[], list[tuple[str, str, str, str]]]) -> HttpRouter:
    """GET /status (the section), /status/npc (the view), /report (the JSON part)."""
    http = HttpRouter()

    async def section(_: Request) -> Response:
        return Response(200, status_section(status()))

    async def view(_: Request) -> Response:
        return Response(200, status_view(status(), objects(), pods()))

    async def json_report(_: Request) -> Response:
        return Response(200, json.dumps(report(status(), objects()), indent=1) + "\n", "application/json")

    http.add("GET", "/status", section)
    http.add("GET", "/status/npc", view)
    http.add("GET", "/report", json_report)
    return http
