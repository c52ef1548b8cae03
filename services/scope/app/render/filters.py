"""Filters and transforms over rendered nodes (Scope's render/filters.go).

A predicate is `RNode -> bool`. `keep(pred, nodes)` is Scope's FilterFunc.Transform:
nodes failing it are dropped and counted in `filtered`, and edges to them are cut.
`make_filter` lets pseudo nodes through (Scope's MakeFilter). `color_connected` marks
nodes with an edge to or from another node (`is_connected`), which the processes'
`unconnected=hide` option keeps. `filter_unconnected` drops nodes without edges (only
pseudo ones for the base filter every topology gets).
"""
from __future__ import annotations

import re
from typing import Callable

from services.scope.app.render import keys
from services.scope.app.render.nodes import Nodes
from services.scope.app.render.view import PSEUDO, RNode

Predicate = Callable[[RNode], bool]
IS_CONNECTED = "is_connected"
INCOMING_INTERNET_ID = "in-theinternet"
OUTGOING_INTERNET_ID = "out-theinternet"
SERVICE_NODE_ID_PREFIX = "service-"
CONNECTED_MARK_TIME = 0
"""The time on `is_connected` marks: fixed, so a render is a function of the report
alone (Scope stamps mtime.Now(), which no client reads)."""


def keep(pred: Predicate, nodes: Nodes) -> Nodes:
    out: dict[str, RNode] = {}
    filtered = nodes.filtered
    for nid, n in nodes.nodes.items():
        if pred(n):
            out[nid] = n
        else:
            filtered += 1
    for nid, n in out.items():
        if any(dst not in out for dst in n.adjacency):
            n = n.copy()
            n.adjacency = {dst for dst in n.adjacency if dst in out}
            out[nid] = n
    return Nodes(out, filtered)


def make_filter(pred: Predicate, nodes: Nodes) -> Nodes:
    """Keep nodes passing `pred`; pseudo nodes always pass."""
    return keep(lambda n: n.topology == PSEUDO or pred(n), nodes)


def any_of(*preds: Predicate) -> Predicate:
    return lambda n: any(p(n) for p in preds)


def all_of(*preds: Predicate) -> Predicate:
    return lambda n: all(p(n) for p in preds)


def connected_ids(nodes: dict[str, RNode]) -> set[str]:
    """Ids with an edge to or from another node (self-edges do not count)."""
    out: set[str] = set()
    for nid, n in nodes.items():
        for dst in n.adjacency:
            if dst != nid:
                out.add(nid)
                out.add(dst)
    return out


def color_connected(nodes: Nodes) -> Nodes:
    out = dict(nodes.nodes)
    for nid in connected_ids(nodes.nodes):
        n = out.get(nid)
        if n is not None:
            n = n.copy()
            n.latest[IS_CONNECTED] = (CONNECTED_MARK_TIME, "true")
            out[nid] = n
    return Nodes(out, nodes.filtered)


def filter_unconnected(nodes: Nodes, only_pseudo: bool) -> Nodes:
    out = dict(nodes.nodes)
    incoming = out.get(INCOMING_INTERNET_ID)
    if incoming is not None and OUTGOING_INTERNET_ID in incoming.adjacency:
        # edges between the two internet nodes are conntrack artefacts (NAT, VIPs)
        incoming = incoming.copy()
        incoming.adjacency.discard(OUTGOING_INTERNET_ID)
        out[INCOMING_INTERNET_ID] = incoming
    connected = connected_ids(out)
    filtered = nodes.filtered
    for nid, n in list(out.items()):
        if nid not in connected and (not only_pseudo or n.topology == PSEUDO):
            del out[nid]
            filtered += 1
    return Nodes(out, filtered)


# -- predicates --------------------------------------------------------------------------
def is_connected(n: RNode) -> bool:
    return IS_CONNECTED in n.latest


def is_pseudo_topology(n: RNode) -> bool:
    return n.topology == PSEUDO


def is_internet_node(n: RNode) -> bool:
    return n.id in (INCOMING_INTERNET_ID, OUTGOING_INTERNET_ID)


def is_not_pseudo(n: RNode) -> bool:
    """Not pseudo, or the internet or a known service (which the `hide` options keep)."""
    return n.topology != PSEUDO or is_internet_node(n) or n.id.startswith(SERVICE_NODE_ID_PREFIX)


def is_running(n: RNode) -> bool:
    state = n.value(keys.DOCKER_CONTAINER_STATE)
    return state is None or state in keys.RUNNING_STATES


def is_stopped(n: RNode) -> bool:
    return not is_running(n)


_SYSTEM_CONTAINER_NAMES = {"weavescope", "weavedns", "weave", "weaveproxy", "weaveexec", "ecs-agent"}
_SYSTEM_IMAGE_PREFIXES = {
    "swarm", "weaveworks/scope", "weaveworks/weavedns", "weaveworks/weave", "weaveworks/weaveproxy",
    "weaveworks/weaveexec", "amazon/amazon-ecs-agent", "openshift/origin-pod", "docker.io/openshift/origin-pod"}
_PAUSE_IMAGE = re.compile(r"(^|/)pause(-amd64)?$")  # Kubernetes' pause images (IsPauseImageName)


def is_application(n: RNode) -> bool:
    if (n.value(keys.DOCKER_CONTAINER_NAME) or "") in _SYSTEM_CONTAINER_NAMES:
        return False
    image_prefix = (n.value(keys.DOCKER_IMAGE_NAME) or "").split(":", 1)[0]
    if image_prefix in _SYSTEM_IMAGE_PREFIXES or _PAUSE_IMAGE.search(image_prefix):
        return False
    for prefix in (keys.DOCKER_LABEL_PREFIX, keys.DOCKER_IMAGE_LABEL_PREFIX):
        if n.value(prefix + "works.weave.role") == "system":
            return False
    if n.value(keys.DOCKER_LABEL_PREFIX + "io.kubernetes.pod.namespace") == "kube-system":
        return False
    return not (n.value(keys.DOCKER_LABEL_PREFIX + "io.kubernetes.pod.name") or "").startswith("kube-system/")


def is_system(n: RNode) -> bool:
    return not is_application(n)


def has_children(topology: str) -> Predicate:
    return lambda n: any(c.topology == topology for c in n.children.values())
