"""Node details: a node's full summary plus its controls, children tables and
connection tables (Scope's render/detailed/{node,connections}.go).

Connections are counted from the endpoints under each node: an inbound row per
(remote node, port of ours) with how many distinct source endpoints connect, an
outbound row per (remote node, port of theirs). A NATed endpoint (`copy_of`) counts as
its original. Rows for the internet node break out each remote address.
"""
from __future__ import annotations

from services.scope import ids
from services.scope.app.render import keys
from services.scope.app.render.filters import is_internet_node
from services.scope.app.render.summary import PRIMARY_API_TOPOLOGY, node_summary
from services.scope.app.render.view import ReportView, RNode

_NORMAL_COLUMNS = [{"id": "port", "label": "Port", "defaultSort": False, "dataType": "number"},
                   {"id": "count", "label": "Count", "defaultSort": True, "dataType": "number"}]
_INTERNET_COLUMNS = [{"id": "remote", "label": "Remote", "defaultSort": False, "dataType": ""}] + _NORMAL_COLUMNS


def _column(cid: str, label: str, data_type: str = "") -> dict:
    return {"id": cid, "label": label, "defaultSort": False, "dataType": data_type}


# children tables, in Scope's order: (report topology, label, columns)
_CHILD_GROUPS = (
    ("pod", "Pods", [_column("kubernetes_state", "State"), _column("container", "# Containers", "number"),
                     _column("kubernetes_ip", "IP", "ip")]),
    ("ecs_task", "Tasks", [_column("ecs_created_at", "Created At", "datetime")]),
    ("container", "Containers", [_column("docker_cpu_total_usage", "CPU", "number"),
                                 _column("docker_memory_usage", "Memory", "number")]),
    ("process", "Processes", [_column("pid", "PID", "number"), _column("process_cpu_usage_percent", "CPU", "number"),
                              _column("process_memory_usage_bytes", "Memory", "number")]),
    ("container_image", "Container images", []),
    ("persistent_volume", "Persistent Volumes", []),
    ("persistent_volume_claim", "Persistent Volume Claims", []),
    ("storage_class", "Storage Classes", []),
    ("volume_snapshot", "Volume Snapshots", []),
    ("volume_snapshot_data", "Volume Snapshot Data", []),
)


def node_details(view: ReportView, api_topology: str, nodes: dict[str, RNode], n: RNode) -> dict:
    """`nodes`: the topology as rendered for this request (filters applied, n put back)."""
    out = node_summary(view, n, samples=True) or {"id": n.id, "label": n.id, "labelMinor": "", "rank": ""}
    out["controls"] = controls(view, n)
    groups = children(view, n)
    if groups:
        out["children"] = groups
    out["connections"] = [incoming_connections(view, api_topology, n, nodes),
                          outgoing_connections(view, api_topology, n, nodes)]
    return out


def controls(view: ReportView, n: RNode) -> list[dict]:
    t = view.topology(n.topology)
    node = t.nodes.get(n.id) if t is not None else None
    probe_id = node.lookup(keys.CONTROL_PROBE_ID) if node is not None else None
    if probe_id is None:
        return []
    out = []
    for control_id in (node.lookup("active_controls") or "").split(";"):
        control = t.controls.get(control_id)
        if control is not None:
            out.append({"probeId": probe_id, "nodeId": n.id, "id": control.get("id", control_id),
                        "human": control.get("human", ""), "icon": control.get("icon", ""),
                        "rank": control.get("rank", 0)})
    return out


def children(view: ReportView, n: RNode) -> list[dict]:
    by_topology: dict[str, list[dict]] = {}
    for child in n.children.values():
        if child.id == n.id:
            continue
        s = node_summary(view, child)
        if s is not None:
            by_topology.setdefault(child.topology, []).append(s)
    groups = []
    for topology, label, columns in _CHILD_GROUPS:
        summaries = by_topology.pop(topology, None)
        if summaries and topology in PRIMARY_API_TOPOLOGY:
            groups.append({"id": "", "label": label, "nodes": sorted(summaries, key=lambda s: s["id"]),
                           "topologyId": PRIMARY_API_TOPOLOGY[topology], "columns": columns})
    for topology in sorted(by_topology):  # no group spec: Scope lists them without rows
        t = view.topology(topology)
        if t is not None and topology in PRIMARY_API_TOPOLOGY:
            groups.append({"id": "", "label": t.label_plural, "nodes": None,
                           "topologyId": PRIMARY_API_TOPOLOGY[topology], "columns": []})
    return groups


# -- connections -------------------------------------------------------------------------
def _endpoint_children(n: RNode) -> list[RNode]:
    return [c for c in n.children.values() if c.topology == keys.ENDPOINT]


def _internet_addr(node: RNode, ep) -> str | None:
    """"" for nodes other than the internet; the address (with a reverse DNS name) for it;
    None when the endpoint id is not one."""
    if not is_internet_node(node):
        return ""
    parsed = ids.parse_endpoint_node_id(ep.id) if ep is not None else None
    if parsed is None:
        return None
    names = ep.sets.get(keys.REVERSE_DNS_NAMES, ())
    return f"{names[0]} ({parsed[1]})" if names else parsed[1]


class _Counts:
    def __init__(self) -> None:
        self.counted: set[str] = set()
        self.counts: dict[tuple[str, str, str, str], int] = {}

    def add(self, outgoing: bool, local: RNode, remote: RNode, local_ep, remote_ep) -> None:
        src, dst = (local_ep, remote_ep) if outgoing else (remote_ep, local_ep)
        if src is None or dst is None:
            return
        connection = src.value(keys.COPY_OF) or src.id  # once per source, pre-NAT
        if connection in self.counted:
            return
        parsed = ids.parse_endpoint_node_id(dst.id)
        remote_addr, local_addr = _internet_addr(remote, remote_ep), _internet_addr(local, local_ep)
        if parsed is None or remote_addr is None or local_addr is None:
            return
        self.counted.add(connection)
        key = (remote.id, remote_addr, local_addr, parsed[2])
        self.counts[key] = self.counts.get(key, 0) + 1

    def rows(self, view: ReportView, nodes: dict[str, RNode], include_local: bool) -> list[dict]:
        out = []
        for (remote_id, remote_addr, local_addr, port), count in self.counts.items():
            s = node_summary(view, nodes[remote_id]) or {"id": remote_id, "label": remote_id, "labelMinor": ""}
            row = {"id": f"{remote_id}-{remote_addr}-{local_addr}-{port}", "nodeId": s["id"],
                   "label": remote_addr or s["label"]}
            if s.get("labelMinor"):
                row["labelMinor"] = s["labelMinor"]
            metadata = [{"id": "remote", "label": "", "value": local_addr}] if include_local else []
            metadata += [{"id": "port", "label": "", "value": port}, {"id": "count", "label": "", "value": str(count)}]
            row["metadata"] = metadata
            out.append(row)
        out.sort(key=lambda r: r["id"])
        return out


def _canonical(n: RNode) -> tuple[set[str], dict[str, str]]:
    ids, copies = set(), {}
    for c in _endpoint_children(n):
        ids.add(c.id)
        original = c.value(keys.COPY_OF)
        if original is not None:
            copies[c.id] = original
    return ids, copies


def _summary(nid: str, label: str, api_topology: str, n: RNode, counts: _Counts, view, nodes) -> dict:
    return {"id": nid, "topologyId": api_topology, "label": label,
            "columns": _INTERNET_COLUMNS if is_internet_node(n) else _NORMAL_COLUMNS,
            "connections": counts.rows(view, nodes, is_internet_node(n))}


def incoming_connections(view: ReportView, api_topology: str, n: RNode, nodes: dict[str, RNode]) -> dict:
    local_ids, copies = _canonical(n)
    report_endpoints = view.nodes(keys.ENDPOINT)
    counts = _Counts()
    for node in nodes.values():
        if n.id not in node.adjacency:
            continue
        for remote_ep in _endpoint_children(node):
            for local_id in remote_ep.adjacency & local_ids:
                local_id = copies.get(local_id, local_id)
                counts.add(False, n, node, report_endpoints.get(local_id), remote_ep)
    return _summary("incoming-connections", "Inbound", api_topology, n, counts, view, nodes)


def outgoing_connections(view: ReportView, api_topology: str, n: RNode, nodes: dict[str, RNode]) -> dict:
    local_eps = _endpoint_children(n)
    report_endpoints = view.nodes(keys.ENDPOINT)
    counts = _Counts()
    for nid in n.adjacency:
        node = nodes.get(nid)
        if node is None:
            continue
        remote_ids, copies = _canonical(node)
        for local_ep in local_eps:
            for remote_id in local_ep.adjacency & remote_ids:
                remote_id = copies.get(remote_id, remote_id)
                counts.add(True, n, node, local_ep, report_endpoints.get(remote_id))
    return _summary("outgoing-connections", "Outbound", api_topology, n, counts, view, nodes)
