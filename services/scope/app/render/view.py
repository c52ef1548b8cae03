"""The merged report as the render pipeline sees it.

The render works on `RNode`s: a report node's fields plus what rendering adds
(children, counters). A `ReportView` holds the core's `Topology` per Scope topology
name (`process`, `endpoint`, `host`, ...: nodes, templates, controls), the report's DNS
records, and the nodes of each topology as RNodes. `from_report` builds one from the
core's merged `Report`.

Contract for every renderer: an `RNode` that another renderer returned is never
mutated; whoever changes one works on `copy()` (Go's value semantics, made explicit).
Times are int nanoseconds since the Unix epoch (docs/scope.md).
"""
from __future__ import annotations

from services.scope.report import Metric, Node, Report, Topology

PSEUDO = "pseudo"


class RNode:
    """A node in the render. `adjacency` is a set of node ids; `children` maps a child's
    id to the child; `counters` counts children by topology (Scope's `count_*`)."""

    __slots__ = ("id", "topology", "latest", "sets", "adjacency", "parents", "metrics", "children", "counters")

    def __init__(self, id: str, topology: str, latest: dict | None = None, sets: dict | None = None,
                 adjacency: set | None = None, parents: dict | None = None, metrics: dict | None = None,
                 children: dict | None = None, counters: dict | None = None) -> None:
        self.id, self.topology = id, topology
        self.latest: dict[str, tuple[int, str]] = latest if latest is not None else {}
        self.sets: dict[str, tuple[str, ...]] = sets if sets is not None else {}
        self.adjacency: set[str] = adjacency if adjacency is not None else set()
        self.parents: dict[str, tuple[str, ...]] = parents if parents is not None else {}
        self.metrics: dict[str, Metric] = metrics if metrics is not None else {}
        self.children: dict[str, RNode] = children if children is not None else {}
        self.counters: dict[str, int] = counters if counters is not None else {}

    def copy(self) -> "RNode":
        """A copy whose containers may be changed; the values inside are shared."""
        return RNode(self.id, self.topology, dict(self.latest), dict(self.sets), set(self.adjacency),
                     dict(self.parents), dict(self.metrics), dict(self.children), dict(self.counters))

    def value(self, key: str) -> str | None:
        entry = self.latest.get(key)
        return entry[1] if entry is not None else None

    def merge(self, other: "RNode") -> "RNode":
        """Scope's Node.Merge: newer latest wins, sets/adjacency/parents unite, metrics
        merge, children unite; counters keep the larger count (Scope keeps the newer)."""
        out = self.copy()
        if not out.topology:
            out.topology = other.topology
        for k, entry in other.latest.items():
            mine = out.latest.get(k)
            if mine is None or entry > mine:  # newer wins; at equal times the greater value
                out.latest[k] = entry
        for k, vs in other.sets.items():
            out.sets[k] = tuple(sorted(set(out.sets.get(k, ())) | set(vs)))
        out.adjacency |= other.adjacency
        for k, vs in other.parents.items():
            out.parents[k] = tuple(sorted(set(out.parents.get(k, ())) | set(vs)))
        for k, m in other.metrics.items():
            out.metrics[k] = out.metrics[k].merge(m) if k in out.metrics else m
        for k, child in other.children.items():
            out.children.setdefault(k, child)
        for k, c in other.counters.items():
            out.counters[k] = max(c, out.counters.get(k, 0))
        return out

    def count_children(self, topology: str) -> int:
        return sum(1 for c in self.children.values() if c.topology == topology)

    def __repr__(self) -> str:  # for test failures
        return f"RNode({self.id!r}, {self.topology!r}, adjacency={sorted(self.adjacency)})"


class ReportView:
    """A merged report for the render: the core's topologies (templates, controls, the
    report's own nodes) by Scope topology name, the DNS records, and each topology's
    nodes as `RNode`s, converted once, on first use."""

    def __init__(self, topologies: dict[str, Topology],
                 dns: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] | None = None,
                 plugins: list | None = None) -> None:
        self.topologies = topologies
        self.dns = dns or {}
        """Address -> (forward names, reverse names), each sorted."""
        self.plugins = plugins or []
        self._rnodes: dict[str, dict[str, RNode]] = {}

    def topology(self, name: str) -> Topology | None:
        return self.topologies.get(name)

    def nodes(self, name: str) -> dict[str, RNode]:
        """The topology's nodes as RNodes (shared: copy before changing one)."""
        out = self._rnodes.get(name)
        if out is None:
            t = self.topologies.get(name)
            out = {} if t is None else {key: rnode_of(key, name, n) for key, n in t.nodes.items()}
            self._rnodes[name] = out
        return out


def rnode_of(key: str, topology: str, n: Node) -> RNode:
    """An RNode sharing the core node's (read-only) dicts; `key` is the node's identity."""
    return RNode(n.id or key, n.topology or topology, n.latest, n.sets, set(n.adjacency), n.parents,
                 n.metrics)


def from_report(report: Report) -> ReportView:
    """The view of a merged report (shares its topologies, which must not change)."""
    return ReportView(dict(report.topologies()), report.dns, list(report.plugins))
