"""Ours, beside Scope's answers (docs/scope.md, "App"): fields that Scope's UI and
clients ignore, for clients that know weave-py.

- `weave_py_blocked` on any node: ids of the nodes (in the same topology) that its
  connection attempts were blocked to by a NetworkPolicy. The probe marks a blocked
  attempt's source endpoint `weave_py_blocked` = "true" with the destinations in its set
  `weave_py_blocked_to`; an endpoint belongs to the rendered node that has it among its
  descendants, so blocked edges follow the nodes up (processes, containers, hosts) as
  Scope's edges do. The attempt is also an ordinary edge (the probe adds it to the adjacency):
  Scope's UI draws it; ours can draw it as blocked.
- `weave_py_links` on a Weave Net peer: one entry per link the probe's
  `weave_py_links_table_` rows describe: the peer's node id in the rendered topology
  (an unmanaged pseudo node when no probe runs there), its peer name, the overlay
  carrying the link (the router's name: `weave-py-vxlan` = fastpath, `fast-sleeve`,
  `sleeve`), encryption, MTU and state.
"""
from __future__ import annotations

from services.scope import ids
from services.scope.app.render import keys
from services.scope.app.render.view import ReportView, RNode

BLOCKED = "weave_py_blocked"
BLOCKED_TO = "weave_py_blocked_to"
LINKS_PREFIX = "weave_py_links_table_"
_LINK_COLUMNS = {"weave_py_link_overlay": "overlay", "weave_py_link_state": "state",
                 "weave_py_link_encrypted": "encrypted", "weave_py_link_mtu": "mtu"}


def _endpoints_under(n: RNode) -> list[RNode]:
    """The endpoints among n's descendants (a host's are also under its containers)."""
    out, stack, seen = [], list(n.children.values()), set()
    while stack:
        c = stack.pop()
        if c.id in seen:
            continue
        seen.add(c.id)
        if c.topology == keys.ENDPOINT:
            out.append(c)
        else:
            stack.extend(c.children.values())
    return out


def blocked_targets(nodes: dict[str, RNode]) -> dict[str, list[str]]:
    """Rendered node id -> the rendered node ids its blocked attempts went to."""
    under = {nid: _endpoints_under(n) for nid, n in nodes.items()}
    owner: dict[str, str] = {}
    for nid, endpoints in under.items():
        for ep in endpoints:
            owner.setdefault(ep.id, nid)
    out: dict[str, list[str]] = {}
    for nid, endpoints in under.items():
        targets = {owner[dst] for ep in endpoints if ep.value(BLOCKED) == "true"
                   for dst in ep.sets.get(BLOCKED_TO, ()) if dst in owner}
        if targets:
            out[nid] = sorted(targets)
    return out


def _peer_ids(nodes: dict[str, RNode]) -> dict[str, str]:
    """Weave peer name -> its node id in the rendered weave topology."""
    out: dict[str, str] = {}
    for nid, n in nodes.items():
        parsed = ids.parse_overlay_node_id(nid)
        if parsed is not None:
            out[parsed[1]] = nid
        for cid in n.children:
            child = ids.parse_overlay_node_id(cid)
            if child is not None:
                out.setdefault(child[1], nid)
    return out


def overlay_links(n: RNode, peer_ids: dict[str, str]) -> list[dict]:
    rows: dict[str, dict] = {}
    for key, (_, value) in n.latest.items():
        if not key.startswith(LINKS_PREFIX):
            continue
        name, _, column = key[len(LINKS_PREFIX):].partition("___")
        field = _LINK_COLUMNS.get(column)
        if field is not None:
            rows.setdefault(name, {})[field] = value
    out = []
    for name in sorted(rows):
        row = rows[name]
        mtu = row.get("mtu", "")
        out.append({"peer": peer_ids.get(name, ids.make_overlay_node_id(name)), "peerName": name,
                    "overlay": row.get("overlay", ""), "encrypted": row.get("encrypted") == "true",
                    "mtu": int(mtu) if mtu.isdigit() else None, "state": row.get("state", "")})
    return out


def any_blocked(view: ReportView) -> bool:
    """Whether any endpoint of the report is a blocked attempt (else nothing to look for)."""
    return any(BLOCKED in ep.latest for ep in view.nodes(keys.ENDPOINT).values())


def annotate(topology_id: str, nodes: dict[str, RNode], summaries: dict[str, dict], blocked: bool = True) -> None:
    """Add our fields to the summaries (in place) of the rendered `nodes`; `blocked`
    False: the report has no blocked attempts (`any_blocked`)."""
    for nid, targets in (blocked_targets(nodes) if blocked else {}).items():
        if nid in summaries:
            summaries[nid][BLOCKED] = targets
    if topology_id == "weave":
        peer_ids = _peer_ids(nodes)
        for nid, s in summaries.items():
            links = overlay_links(nodes[nid], peer_ids)
            if links:
                s["weave_py_links"] = links
