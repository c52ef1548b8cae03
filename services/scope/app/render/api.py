"""The bodies of Scope's read API for one merged report (sans-I/O: a report in, JSON-able
values out), with our own fields beside Scope's (additions.py). `ReportRender` is built once per merged report and caches every render, so
all answers about one report are consistent and rendering is a pure function of it.
"""
from __future__ import annotations

from typing import Mapping

from services.scope.app.render import additions, keys, topologies
from services.scope.app.render.detail import node_details
from services.scope.app.render.pipeline import Render
from services.scope.app.render.summary import node_summary
from services.scope.app.render.view import ReportView
from services.scope.report import format_rfc3339nano


MAX_CACHED_ANSWERS = 64
"""Summaries kept per report, by (topology, query): queries come from clients, so the
cache is bounded (the oldest goes first)."""


class UnknownTopology(KeyError):
    """The request named a topology Scope does not have (the API answers 404)."""


class ReportRender:
    def __init__(self, view: ReportView) -> None:
        self.view = view
        self._render = Render(view)
        self._summaries: dict[tuple, dict] = {}
        self._blocked = additions.any_blocked(view)

    def topology_list(self, query: Mapping[str, str]) -> list[dict]:
        """`GET /api/topology`."""
        return topologies.topology_list(self._render, query)

    def summaries(self, topology_id: str, query: Mapping[str, str]) -> dict[str, dict]:
        """`GET /api/topology/<t>`'s `nodes`, and each websocket frame's state. The
        returned dict is shared (cached): do not change it."""
        key = (topology_id, tuple(sorted(query.items())))
        out = self._summaries.get(key)
        if out is None:
            nodes = self._nodes(topology_id, query)
            out = {}
            for nid, n in nodes.nodes.items():
                s = node_summary(self.view, n)
                if s is not None:
                    out[nid] = s
            additions.annotate(topology_id, nodes.nodes, out, self._blocked)
            if len(self._summaries) >= MAX_CACHED_ANSWERS:
                del self._summaries[next(iter(self._summaries))]
            self._summaries[key] = out
        return out

    def details(self, topology_id: str, node_id: str, query: Mapping[str, str]) -> dict | None:
        """`GET /api/topology/<t>/<id>`'s `node`, or None when the topology has no such
        node. A node that the request's filters would hide is still shown (Scope puts it
        back into the filtered topology)."""
        topology = self._topology(topology_id)
        unfiltered = topology.render(self._render)
        node = unfiltered.nodes.get(node_id)
        if node is None:
            return None
        nodes = dict(topologies.transform(topology, query, unfiltered).nodes)
        node = nodes.setdefault(node_id, node)
        out = node_details(self.view, topology_id, nodes, node)
        additions.annotate(topology_id, nodes, {node_id: out}, self._blocked)
        return out

    def probes(self) -> list[dict]:
        """`GET /api/probes`: one entry per probe's host node in the report."""
        out = []
        for n in self.view.nodes(keys.HOST).values():
            version = n.latest.get(keys.SCOPE_VERSION)
            out.append({"hostname": n.value(keys.HOST_NAME) or "", "id": n.value(keys.CONTROL_PROBE_ID) or "",
                        "lastSeen": format_rfc3339nano(version[0]) if version else "0001-01-01T00:00:00Z",
                        "version": version[1] if version else ""})
        return sorted(out, key=lambda p: (p["hostname"], p["id"]))

    def _topology(self, topology_id: str) -> topologies.ApiTopology:
        topology = topologies.BY_ID.get(topology_id)
        if topology is None:
            raise UnknownTopology(topology_id)
        return topology

    def _nodes(self, topology_id: str, query: Mapping[str, str]):
        topology = self._topology(topology_id)
        return topologies.transform(topology, query, topology.render(self._render))


def topology_diff(previous: Mapping[str, dict] | None, current: Mapping[str, dict]) -> dict:
    """A websocket frame: what changed from `previous` (None: the first frame, a reset)
    to `current`. Empty parts are null; lists are sorted by node id."""
    before = previous or {}
    add = [current[k] for k in sorted(current.keys() - before.keys())]
    remove = sorted(before.keys() - current.keys())
    update = [current[k] for k in sorted(current.keys() & before.keys()) if current[k] != before[k]]
    frame = {"add": add or None, "update": update or None, "remove": remove or None}
    if previous is None:
        frame["reset"] = True
    return frame
