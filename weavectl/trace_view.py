"""Recent traces of a host, read from its span files (shared.tracing's JSON lines),
rendered as trees with timings: what `weave trace` prints when no collector is used."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from shared.tracing import read_spans


@dataclass
class Node:
    span: dict
    children: list["Node"] = field(default_factory=list)

    @property
    def start(self) -> int:
        return self.span["start_ns"]


def build_traces(spans: Iterable[dict]) -> list[list[Node]]:
    """Spans grouped by trace, each a list of root nodes with children, oldest trace first."""
    by_trace: dict[str, dict[str, Node]] = {}
    for span in spans:
        by_trace.setdefault(span["trace_id"], {})[span["span_id"]] = Node(span)
    traces = []
    for nodes in by_trace.values():
        roots = []
        for node in nodes.values():
            parent = nodes.get(node.span.get("parent_id") or "")
            (parent.children if parent else roots).append(node)
        for node in nodes.values():
            node.children.sort(key=lambda n: n.start)
        traces.append(sorted(roots, key=lambda n: n.start))
    return sorted(traces, key=lambda roots: roots[0].start)


def _ms(span: dict) -> float:
    return (span["end_ns"] - span["start_ns"]) / 1e6


def render(roots: list[Node]) -> str:
    first = roots[0].span
    end = max(_end(n) for n in roots)
    lines = [f"trace {first['trace_id']}  {(end - roots[0].start) / 1e6:.2f} ms"]

    def walk(node: Node, depth: int) -> None:
        s = node.span
        offset = (node.start - roots[0].start) / 1e6
        status = "" if s.get("status") in ("UNSET", "OK") else f"  [{s['status']}]"
        lines.append(f"{'  ' * depth}+{offset:8.2f} ms  {_ms(s):8.2f} ms  {s['name']}  "
                     f"({s.get('service', '')}@{s.get('host', '')}){status}")
        for child in node.children:
            walk(child, depth + 1)

    for root in roots:
        walk(root, 1)
    return "\n".join(lines)


def _end(node: Node) -> int:
    return max([node.span["end_ns"], *(_end(c) for c in node.children)])


def recent(trace_dirs: Iterable[Path], last: int, match: str = "") -> list[str]:
    spans = [s for d in trace_dirs for s in read_spans(d)]
    traces = build_traces(spans)
    if match:
        traces = [t for t in traces if any(match in n.span["name"] for n in _all(t))]
    return [render(t) for t in traces[-last:]]


def _all(roots: list[Node]) -> Iterable[Node]:
    for node in roots:
        yield node
        yield from _all(node.children)
