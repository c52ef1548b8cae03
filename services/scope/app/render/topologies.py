"""The API topologies: what `GET /api/topology` lists and how each is rendered and
filtered (Scope's app/api_topologies.go, as Scope 1.13 serves it).

Options (the README's observation, Scope's RendererForTopology): a request with no query
at all gets only the base filter (unconnected pseudo nodes dropped); a request with any
query value, even just `t`, gets every option group's value, its default unless given,
applied as filters before the base filter. Kubernetes, ECS and Swarm topologies are
listed (the UI expects them) but render empty: no probe of ours reports those.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

from services.scope.app.render import filters, pipeline
from services.scope.app.render.filters import Predicate
from services.scope.app.render.nodes import Nodes
from services.scope.app.render.view import PSEUDO


@dataclass(frozen=True)
class Option:
    value: str
    label: str
    predicate: Predicate | None = None
    """None: everything passes."""
    also_pseudo: bool = False
    """Apply the predicate to pseudo nodes too (else they always pass)."""


@dataclass(frozen=True)
class OptionGroup:
    id: str
    default: str
    options: tuple[Option, ...]

    def predicate(self, value: str) -> Predicate | None:
        for opt in self.options:
            if opt.value == value:
                if opt.predicate is None:
                    return lambda n: True
                return opt.predicate if opt.also_pseudo else filters.any_of(filters.is_pseudo_topology, opt.predicate)
        return None

    def to_json(self) -> dict:
        return {"defaultValue": self.default, "id": self.id,
                "options": [{"label": o.label, "value": o.value} for o in self.options]}


@dataclass(frozen=True)
class ApiTopology:
    id: str
    name: str
    render: Callable[[pipeline.Render], Nodes]
    rank: int = 0
    options: tuple[OptionGroup, ...] = ()
    hide_if_empty: bool = False
    parent: str = ""
    subs: list = field(default_factory=list)


_CONTAINER_OPTIONS = (
    OptionGroup("system", "application", (Option("all", "All"), Option("system", "System containers", filters.is_system),
                                          Option("application", "Application containers", filters.is_application))),
    OptionGroup("stopped", "running", (Option("stopped", "Stopped containers", filters.is_stopped),
                                       Option("running", "Running containers", filters.is_running),
                                       Option("both", "Both"))),
    OptionGroup("pseudo", "hide", (Option("show", "Show uncontained"),
                                   Option("hide", "Hide uncontained", filters.is_not_pseudo, also_pseudo=True))),
)
_UNCONNECTED = (OptionGroup("unconnected", "hide", (Option("show", "Show unconnected"),
                                                    Option("hide", "Hide unconnected", filters.is_connected))),)


def _unmanaged(what: str) -> OptionGroup:
    return OptionGroup(what, "hide", (Option("show", f"Show {'unmanaged' if what == 'pseudo' else what}"),
                                      Option("hide", f"Hide {'unmanaged' if what == 'pseudo' else what}",
                                             filters.is_not_pseudo, also_pseudo=True)))


def _nothing(_: pipeline.Render) -> Nodes:
    return Nodes()


def _not_in(*topologies: str) -> Predicate:
    return lambda n: n.topology not in topologies


_POD_OPTIONS = (OptionGroup("snapshot", "hide", (
                    Option("show", "Show snapshots"),
                    Option("hide", "Hide snapshots", _not_in("volume_snapshot", "volume_snapshot_data")))),
                OptionGroup("storage", "hide", (
                    Option("show", "Show storage"),
                    Option("hide", "Hide storage", _not_in("persistent_volume", "persistent_volume_claim",
                                                           "storage_class")))),
                _unmanaged("pseudo"))

TOPOLOGIES: tuple[ApiTopology, ...] = (
    ApiTopology("processes", "Processes", pipeline.connected_processes, 1, _UNCONNECTED, True),
    ApiTopology("processes-by-name", "by name", pipeline.process_names, 0, _UNCONNECTED, True, "processes"),
    ApiTopology("containers", "Containers", pipeline.containers_with_image_names, 2, _CONTAINER_OPTIONS),
    ApiTopology("containers-by-hostname", "by DNS name", pipeline.container_hostnames, 0, _CONTAINER_OPTIONS,
                parent="containers"),
    ApiTopology("containers-by-image", "by image", pipeline.container_images, 0, _CONTAINER_OPTIONS,
                parent="containers"),
    ApiTopology("pods", "Pods", _nothing, 3, _POD_OPTIONS, True),
    ApiTopology("kube-controllers", "Controllers", _nothing, 0, (_unmanaged("pseudo"),), True, "pods"),
    ApiTopology("services", "Services", _nothing, 0, (_unmanaged("pseudo"),), True, "pods"),
    ApiTopology("ecs-tasks", "Tasks", _nothing, 3, (_unmanaged("pseudo"),), True),
    ApiTopology("ecs-services", "Services", _nothing, 0, (_unmanaged("pseudo"),), True, "ecs-tasks"),
    ApiTopology("swarm-services", "Services", _nothing, 3, (_unmanaged("pseudo"),), True),
    ApiTopology("hosts", "Hosts", pipeline.hosts, 4),
    ApiTopology("weave", "Weave Net", pipeline.weave, 0, parent="hosts"),
)
BY_ID: dict[str, ApiTopology] = {t.id: t for t in TOPOLOGIES}


def transform(topology: ApiTopology, query: Mapping[str, str], nodes: Nodes) -> Nodes:
    """Apply the request's option filters, then the base filter (see the module doc)."""
    if query:
        preds = [p for g in topology.options if (p := g.predicate(query.get(g.id, g.default))) is not None]
        if preds:
            nodes = filters.keep(filters.all_of(*preds), nodes)
    return filters.filter_unconnected(nodes, only_pseudo=True)


def render_topology(r: pipeline.Render, topology_id: str, query: Mapping[str, str]) -> Nodes:
    """KeyError for an unknown topology id."""
    topology = BY_ID[topology_id]
    return transform(topology, query, topology.render(r))


def stats(nodes: Nodes) -> dict:
    real = sum(1 for n in nodes.nodes.values() if n.topology != PSEUDO)
    return {"edge_count": sum(len(n.adjacency) for n in nodes.nodes.values()),
            "filtered_nodes": nodes.filtered, "node_count": len(nodes.nodes), "nonpseudo_node_count": real}


def _describe(r: pipeline.Render, t: ApiTopology, query: Mapping[str, str]) -> dict:
    return {"hide_if_empty": t.hide_if_empty, "name": t.name,
            "options": [g.to_json() for g in t.options] or None, "rank": t.rank,
            "stats": stats(render_topology(r, t.id, query)), "url": f"/api/topology/{t.id}"}


def topology_list(r: pipeline.Render, query: Mapping[str, str]) -> list[dict]:
    """`GET /api/topology`: top-level topologies sorted by name, each with its subs."""
    out = []
    for t in sorted((t for t in TOPOLOGIES if not t.parent), key=lambda t: t.name):
        desc = _describe(r, t, query)
        subs = [_describe(r, s, query) for s in TOPOLOGIES if s.parent == t.id]
        if subs:
            desc["sub_topologies"] = subs
        out.append(desc)
    return out
