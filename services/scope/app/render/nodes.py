"""What a renderer returns (`Nodes`) and how joins build it (`JoinResults`).

Scope's render/render.go semantics: a join maps input nodes to output nodes (one input
may land in several outputs), then rewrites every output's adjacency from its inputs'
adjacency through the same mapping, so edges follow the nodes up the hierarchy
(endpoint -> process -> container -> host). Edges to inputs that were not mapped are
dropped.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from services.scope.app.render.view import RNode

ENDPOINT = "endpoint"


@dataclass
class Nodes:
    """A rendered topology: nodes by id, and how many nodes filters removed."""

    nodes: dict[str, RNode] = field(default_factory=dict)
    filtered: int = 0

    def merge(self, other: "Nodes") -> "Nodes":
        out = dict(self.nodes)
        for nid, n in other.nodes.items():
            mine = out.get(nid)
            out[nid] = n if mine is None else mine.merge(n)
        return Nodes(out, self.filtered + other.filtered)


class JoinResults:
    def __init__(self, inputs: dict[str, RNode] | None = None) -> None:
        """`inputs`: nodes the result starts from (copied, with no adjacency)."""
        self.nodes: dict[str, RNode] = {}
        for nid, n in (inputs or {}).items():
            c = n.copy()
            c.adjacency = set()
            self.nodes[nid] = c
        self.mapped: dict[str, str] = {}
        self.multi: dict[str, list[str]] = {}

    def _map(self, src: str, dst: str) -> None:
        if src not in self.mapped:
            self.mapped[src] = dst
        else:
            self.multi.setdefault(src, []).append(dst)

    def add(self, src: str, m: RNode) -> None:
        """m as a top-level result node (merged with one already there), mapped from src."""
        existing = self.nodes.get(m.id)
        m = m.merge(existing) if existing is not None else m.copy()
        m.adjacency = set()  # result() rebuilds it from the inputs (Scope leaves the
        # input's ids there until a later filter prunes them; the end result is the same)
        self.nodes[m.id] = m
        self._map(src, m.id)

    def add_unmapped_child(self, m: RNode, nid: str, topology: str) -> RNode:
        result = self.nodes.get(nid)
        if result is None:
            result = self.nodes[nid] = RNode(nid, topology)
        result.children[m.id] = m
        if m.topology != ENDPOINT:  # as Scope: endpoint counts are never read
            result.counters[m.topology] = result.counters.get(m.topology, 0) + 1
        return result

    def add_child(self, m: RNode, nid: str, topology: str) -> None:
        self.add_unmapped_child(m, nid, topology)
        self._map(m.id, nid)

    def add_child_and_children(self, m: RNode, nid: str, topology: str) -> None:
        result = self.add_unmapped_child(m, nid, topology)
        for cid, c in m.children.items():
            result.children.setdefault(cid, c)
        self._map(m.id, nid)

    def pass_through(self, n: RNode) -> None:
        c = n.copy()
        c.adjacency = set()
        self.nodes[n.id] = c
        self._map(n.id, n.id)

    def result(self, inputs: Nodes) -> Nodes:
        """The joined nodes, with adjacency rewritten from `inputs` through the mapping."""
        for n in inputs.nodes.values():
            out_id = self.mapped.get(n.id)
            if out_id is None or not n.adjacency:
                continue
            self._rewrite(out_id, n.adjacency)
            for extra in self.multi.get(n.id, ()):
                self._rewrite(extra, n.adjacency)
        return Nodes(self.nodes)

    def _rewrite(self, out_id: str, adjacency: set[str]) -> None:
        out = self.nodes[out_id]
        for a in adjacency:
            dst = self.mapped.get(a)
            if dst is not None:
                out.adjacency.add(dst)
                out.adjacency.update(self.multi.get(a, ()))
