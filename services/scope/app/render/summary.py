"""Node summaries: how each rendered node is shown (Scope's render/detailed/summary.go,
parents.go and report/{metadata,metric,table}_template.go), as Scope's JSON.

A summary is `id, label, labelMinor, rank` and, when there are any, `shape, tag, stack,
pseudo, metadata, parents, metrics, tables, adjacency` (Scope's omitempty). Metadata,
metrics and tables come from the probe's templates for the node's report topology;
group nodes (processes by name, containers by hostname) have none. Metric rows carry
their samples in node details and `samples: null` in topology listings.
"""
from __future__ import annotations

from services.scope.app.render import keys
from services.scope.app.render.filters import INCOMING_INTERNET_ID, OUTGOING_INTERNET_ID, SERVICE_NODE_ID_PREFIX
from services.scope.app.render.pipeline import UNCONTAINED_ID_PREFIX, UNMANAGED_ID_PREFIX
from services.scope import ids
from services.scope.app.render.view import PSEUDO, ReportView, RNode
from services.scope.report import format_rfc3339nano

# report topology -> the API topology that shows it (Scope's primaryAPITopology)
PRIMARY_API_TOPOLOGY = {
    "process": "processes", "container": "containers", "container_image": "containers-by-image",
    "pod": "pods", "deployment": "kube-controllers", "daemon_set": "kube-controllers",
    "stateful_set": "kube-controllers", "cron_job": "kube-controllers", "job": "kube-controllers",
    "service": "services", "ecs_task": "ecs-tasks", "ecs_service": "ecs-services",
    "swarm_service": "swarm-services", "host": "hosts", "persistent_volume": "pods",
    "persistent_volume_claim": "pods", "storage_class": "pods", "volume_snapshot": "pods",
    "volume_snapshot_data": "pods"}
_KUBERNETES = ("pod", "service", "deployment", "daemon_set", "stateful_set", "cron_job", "job",
               "persistent_volume", "persistent_volume_claim", "storage_class", "volume_snapshot",
               "volume_snapshot_data")
_POD_GROUP_TYPE = {"deployment": "Deployment", "daemon_set": "DaemonSet", "stateful_set": "StatefulSet",
                   "cron_job": "CronJob", "job": "Job"}


def pluralize(n: RNode, topology: str, singular: str, plural: str) -> str:
    count = n.counters.get(topology)
    if count is None:
        count = n.count_children(topology)
    return f"{count} {singular if count == 1 else plural}"


def image_name_without_tag(name: str) -> str:
    """`registry:5000/app:1.2` -> `registry:5000/app` (a port is not a tag)."""
    head, sep, tail = name.rpartition(":")
    return head if sep and "/" not in tail else name


def container_name(n: RNode) -> str:
    for key in (keys.DOCKER_LABEL_PREFIX + "com.amazonaws.ecs.container-name",
                keys.DOCKER_LABEL_PREFIX + "io.kubernetes.container.name",
                keys.DOCKER_ENV_PREFIX + "MARATHON_APP_ID", keys.DOCKER_CONTAINER_NAME,
                keys.DOCKER_CONTAINER_HOSTNAME):
        value = n.value(key)
        if value is not None:
            return value
    return (ids.parse_container_node_id(n.id) or "")[:12]


# -- labels by topology ------------------------------------------------------------------
def _pseudo(s: dict, n: RNode) -> None:
    s["pseudo"] = True
    s["rank"] = n.id.partition(":")[2] if n.id.startswith("pseudo:") else n.id
    if n.id == INCOMING_INTERNET_ID or n.id == OUTGOING_INTERNET_ID:
        s["label"] = "The Internet"
        s["labelMinor"] = "Inbound connections" if n.id == INCOMING_INTERNET_ID else "Outbound connections"
        s["shape"] = "cloud"
    elif n.id.startswith(SERVICE_NODE_ID_PREFIX):
        s["label"], s["labelMinor"], s["shape"] = n.id[len(SERVICE_NODE_ID_PREFIX):], "", "cloud"
    elif n.id.startswith((UNCONTAINED_ID_PREFIX, UNMANAGED_ID_PREFIX)):
        uncontained = n.id.startswith(UNCONTAINED_ID_PREFIX)
        prefix = UNCONTAINED_ID_PREFIX if uncontained else UNMANAGED_ID_PREFIX
        s["label"] = "Uncontained" if uncontained else "Unmanaged"
        s["labelMinor"], s["shape"], s["stack"] = n.id[len(prefix):], "square", True
    elif (parsed := ids.parse_endpoint_node_id(n.id)) is not None:
        s["label"], s["shape"] = parsed[1], "circle"
    else:
        s["label"] = s["rank"]


def _process(s: dict, n: RNode) -> None:
    host, _, pid = n.id.partition(";")
    name, cname = n.value(keys.NAME) or "", n.value(keys.DOCKER_CONTAINER_NAME) or ""
    if name:
        s["label"], s["rank"] = name, name
        s["labelMinor"] = f"{host} ({cname}:{pid})" if cname else f"{host} ({pid})"
    else:
        s["label"], s["rank"] = pid, host
        s["labelMinor"] = f"{host} ({cname})" if cname else host


def _container(s: dict, n: RNode) -> None:
    host, image = keys.host_id_of(n.latest), n.value(keys.DOCKER_IMAGE_NAME) or ""
    s["label"], s["labelMinor"] = container_name(n), host
    s["rank"] = image_name_without_tag(image) if image else host or s["label"]


def _container_image(s: dict, n: RNode) -> None:
    image = n.value(keys.DOCKER_IMAGE_NAME) or ""
    short = image_name_without_tag(image)
    if short and short != "<none>":
        s["label"] = short
    elif image and image != "<none>":
        s["label"] = image
    else:
        s["label"] = ids.parse_container_image_node_id(n.id) or ""
    s["labelMinor"] = pluralize(n, keys.CONTAINER, "container", "containers")
    s["rank"], s["stack"] = s["label"], True


def _kubernetes(s: dict, n: RNode) -> None:
    name = n.value("kubernetes_name")
    s["label"] = name if name else n.id.partition(";")[0]
    s["rank"] = (n.value("kubernetes_namespace") or "") + "/" + s["label"]
    if n.topology == "pod":
        s["labelMinor"] = pluralize(n, keys.CONTAINER, "container", "containers")
    elif n.topology in _POD_GROUP_TYPE or n.topology == "service":
        s["stack"] = True
        count = pluralize(n, keys.POD, "pod", "pods")
        kind = _POD_GROUP_TYPE.get(n.topology)
        s["labelMinor"] = f"{kind} of {count}" if kind else count


def _host(s: dict, n: RNode) -> None:
    hostname = ids.parse_host_node_id(n.id) or ""
    parts = hostname.split(".", 1)
    if len(parts) == 2:
        s["label"], s["labelMinor"], s["rank"] = parts[0], parts[1], parts[1]
    else:
        s["label"] = hostname


def _overlay(s: dict, n: RNode) -> None:
    _, peer = ids.parse_overlay_node_id(n.id) or ("", "")
    s["label"] = n.value(keys.WEAVE_PEER_NICK_NAME) or peer
    s["labelMinor"] = peer


def _ecs_task(s: dict, n: RNode) -> None:
    s["label"] = n.value("ecs_task_family") or n.id.partition(";")[0]


def _ecs_service(s: dict, n: RNode) -> None:
    s["label"], s["stack"] = (ids.parse_ecs_service_node_id(n.id) or ("", ""))[1], True


def _swarm_service(s: dict, n: RNode) -> None:
    s["label"] = n.value("service_name") or n.id.partition(";")[0]


_LABELLERS = {PSEUDO: _pseudo, "process": _process, "container": _container, "container_image": _container_image,
              "host": _host, "overlay": _overlay, "ecs_task": _ecs_task, "ecs_service": _ecs_service,
              "swarm_service": _swarm_service, **{t: _kubernetes for t in _KUBERNETES}}


def basic_summary(view: ReportView, n: RNode) -> dict | None:
    """id, label, labelMinor, rank, shape, tag, stack, pseudo; None: not shown (endpoints,
    unknown topologies)."""
    s: dict = {"id": n.id, "label": n.id, "labelMinor": "", "rank": "", "shape": "triangle"}
    t = view.topology(n.topology)
    if t is not None:
        s["shape"] = t.shape or "circle"
        if t.tag:
            s["tag"] = t.tag
    labeller = _LABELLERS.get(n.topology)
    if labeller is not None:
        labeller(s, n)
    elif n.topology.startswith("group:"):
        _group(view, s, n)
    elif t is None or n.topology == keys.ENDPOINT:
        return None
    return s


def _group(view: ReportView, s: dict, n: RNode) -> None:
    s["label"] = s["rank"] = n.id
    parts = n.topology.split(":")
    t = view.topology(parts[1]) if len(parts) == 3 else None
    if t is not None:
        s["shape"] = t.shape or "circle"
        if t.tag:
            s["tag"] = t.tag
        if t.label:
            s["labelMinor"] = pluralize(n, parts[1], t.label, t.label_plural)
    s["stack"] = True


def node_summary(view: ReportView, n: RNode, samples: bool = False) -> dict | None:
    """The full summary; metric rows carry samples only when `samples`."""
    s = basic_summary(view, n)
    if s is None:
        return None
    t = view.topology(n.topology)
    if t is not None and n.count_children(n.topology) == 0:
        _put(s, "metadata", metadata_rows(t.metadata_templates, n))
    _put(s, "parents", parents(view, n))
    if t is not None and n.count_children(n.topology) == 0:
        _put(s, "metrics", metric_rows(t.metric_templates, n, samples))
        _put(s, "tables", tables(t.table_templates, n))
    _put(s, "adjacency", sorted(n.adjacency))
    return s


def _put(s: dict, key: str, value: list) -> None:
    if value:
        s[key] = value


# -- rows from templates -----------------------------------------------------------------
def _value(n: RNode, key: str, source: str) -> str | None:
    if source in ("", "latest"):
        value = n.value(key)
        if value is not None or source:
            return value
    if source in ("", "sets"):
        if key in n.sets:
            return ", ".join(n.sets[key])
        if source:
            return None
    if key in n.counters:
        return str(n.counters[key])
    return None


def metadata_rows(templates: dict, n: RNode) -> list[dict]:
    rows = []
    for t in templates.values():
        value = _value(n, t["id"], t.get("from", ""))
        if value is None:
            continue
        if t.get("truncate", 0) > 0:
            value = value[:t["truncate"]]
        row = {"id": t["id"], "label": t.get("label", ""), "value": value}
        if t.get("priority"):
            row["priority"] = float(t["priority"])
        if t.get("dataType"):
            row["dataType"] = t["dataType"]
        rows.append(row)
    rows.sort(key=lambda r: (r.get("priority", 0.0), r["id"]))
    return rows


def _to_fixed(x: float, digits: int = 2) -> float:
    """Scope's toFixed: truncated (not rounded) to `digits` decimals."""
    scale = 10 ** digits
    return float(int(x * scale)) / scale


def metric_rows(templates: dict, n: RNode, samples: bool) -> list[dict]:
    rows = []
    for t in templates.values():
        m = n.metrics.get(t["id"])
        if m is None:
            continue
        row: dict = {"id": t["id"], "label": t.get("label", "")}
        if t.get("format"):
            row["format"] = t["format"]
        if t.get("group"):
            row["group"] = t["group"]
        row["value"] = _to_fixed(m.samples[-1][1]) if m.samples else 0.0
        if t.get("priority"):
            row["priority"] = float(t["priority"])
        row["samples"] = ([{"date": format_rfc3339nano(ts), "value": v} for ts, v in m.samples]
                          if samples and m.samples else None)
        row["min"], row["max"], row["url"] = m.min, m.max, ""
        rows.append(row)
    rows.sort(key=lambda r: (r.get("priority", 0.0), r["id"]))
    return rows


def _table_rows(template: dict, n: RNode) -> list[dict]:
    prefix = template.get("prefix") or ""
    if template.get("type") == "multicolumn-table":
        by_id: dict[str, dict] = {}
        for key, (_, value) in n.latest.items():
            if prefix and key.startswith(prefix):
                row_id, _, column = key[len(prefix):].partition("___")
                by_id.setdefault(row_id, {"id": row_id, "entries": {}})["entries"][column] = value
        return [by_id[k] for k in sorted(by_id)]
    fixed = template.get("fixedRows") or {}
    by_label: dict[str, str] = {}
    for key, (_, value) in n.latest.items():
        if key in fixed:
            by_label[fixed[key]] = value
        elif prefix and key.startswith(prefix):
            by_label[key[len(prefix):]] = value
    return [{"id": "label_" + label, "entries": {"label": label, "value": by_label[label]}}
            for label in sorted(by_label)]


def tables(templates: dict, n: RNode) -> list[dict]:
    out = []
    for template in templates.values():
        table = {"id": template.get("id", ""), "label": template.get("label", ""),
                 "type": template.get("type") or "property-list", "columns": template.get("columns"),
                 "rows": _table_rows(template, n)}
        truncated = n.value("table_truncation_count_" + (template.get("prefix") or ""))
        if truncated and truncated.isdigit() and int(truncated):
            table["truncationCount"] = int(truncated)
        out.append(table)
    out.sort(key=lambda t: t["id"])
    return out


# -- parents -----------------------------------------------------------------------------
def _parent_label(topology: str, parent: RNode | None, pid: str) -> str:
    if topology == "container_image":
        return ids.parse_container_image_node_id(pid) or ""
    if parent is None:
        return ""
    if topology == "container":
        return container_name(parent)
    if topology == "host":
        return parent.value(keys.HOST_NAME) or ""
    if topology == "ecs_task":
        return parent.value("ecs_task_family") or ""
    if topology == "ecs_service":
        return (ids.parse_ecs_service_node_id(pid) or ("", ""))[1]
    if topology == "swarm_service":
        return parent.value("service_name") or ""
    return parent.value("kubernetes_name") or ""


_PARENT_TOPOLOGIES = sorted(("container", "pod", "deployment", "daemon_set", "stateful_set", "cron_job",
                             "service", "ecs_task", "ecs_service", "swarm_service", "container_image", "host"))


def parents(view: ReportView, n: RNode) -> list[dict]:
    out = []
    for topology in _PARENT_TOPOLOGIES:
        for pid in n.parents.get(topology, ()):
            if topology == n.topology and pid == n.id:
                continue
            parent = view.nodes(topology).get(pid)
            if parent is None and topology != "container_image":
                continue
            out.append({"id": pid, "label": _parent_label(topology, parent, pid),
                        "topologyId": PRIMARY_API_TOPOLOGY[topology]})
    return out
