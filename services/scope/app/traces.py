"""A container's recent traces (`GET /api/weave/traces?node=<container node id>`), from
the span files `weave trace` reads (shared.tracing: `<state dir>/traces/*.jsonl`).

A trace touches a container when one of its spans carries the attribute
`weave.container` = the container's id: the root span of a `weave attach`/`detach`
(weavectl's CLI span) and of a control run on it (the probe's). Only this host's span
files are read: a container's operations are traced on the host it is attached to, so
its traces are served by that host's app (the answer says which host it is when it is
not this one). Reading is a pass over the files, cached until one of them changes
(size or mtime): the files are bounded (4 MiB per service, one rotation kept).
"""
from __future__ import annotations

import os
from pathlib import Path

from services.scope import ids
from shared.tracing import read_spans

CONTAINER_ATTR = "weave.container"


class TraceIndex:
    def __init__(self, trace_dir: Path | None) -> None:
        self.trace_dir = trace_dir
        self._stamp: tuple | None = None
        self._by_trace: dict[str, list[dict]] = {}
        self._by_container: dict[str, set[str]] = {}

    def _files_stamp(self) -> tuple:
        out = []
        for path in sorted(Path(self.trace_dir).glob("*.jsonl*")):
            try:
                st = path.stat()
            except OSError:
                continue
            out.append((path.name, st.st_size, st.st_mtime_ns))
        return tuple(out)

    def _refresh(self) -> None:
        if self.trace_dir is None or not os.path.isdir(self.trace_dir):
            self._by_trace, self._by_container = {}, {}
            return
        stamp = self._files_stamp()
        if stamp == self._stamp:
            return
        by_trace: dict[str, list[dict]] = {}
        by_container: dict[str, set[str]] = {}
        for span in read_spans(self.trace_dir):
            tid = span.get("trace_id")
            if not isinstance(tid, str):
                continue
            by_trace.setdefault(tid, []).append(span)
            container = (span.get("attributes") or {}).get(CONTAINER_ATTR)
            if isinstance(container, str) and container:
                by_container.setdefault(container, set()).add(tid)
        self._stamp, self._by_trace, self._by_container = stamp, by_trace, by_container

    def for_container(self, container_id: str, limit: int = 10) -> list[dict]:
        """The newest `limit` traces touching the container, newest first (blocking reads)."""
        self._refresh()
        traces = [summarize(self._by_trace[t]) for t in self._by_container.get(container_id, ())]
        traces.sort(key=lambda t: -t["start_ns"])
        return traces[:limit]


def summarize(spans: list[dict]) -> dict:
    """One trace as the page shows it: the root's name, its start and duration, and each
    span (depth-first, children by start) with its service, host, offset and duration."""
    by_id = {s.get("span_id"): s for s in spans}
    children: dict[str | None, list[dict]] = {}
    for s in spans:
        parent = s.get("parent_id")
        children.setdefault(parent if parent in by_id else None, []).append(s)
    for group in children.values():
        group.sort(key=lambda s: s.get("start_ns", 0))
    roots = children.get(None, [])
    start = min(s.get("start_ns", 0) for s in spans)
    end = max(s.get("end_ns", 0) for s in spans)
    rows: list[dict] = []

    def walk(span: dict, depth: int) -> None:
        rows.append({"name": span.get("name", ""), "service": span.get("service", ""), "host": span.get("host", ""),
                     "depth": depth, "offset_ms": round((span.get("start_ns", start) - start) / 1e6, 3),
                     "duration_ms": round((span.get("end_ns", 0) - span.get("start_ns", 0)) / 1e6, 3),
                     "status": span.get("status", "UNSET")})
        for child in children.get(span.get("span_id"), []):
            walk(child, depth + 1)

    for root in roots:
        walk(root, 0)
    return {"trace_id": spans[0].get("trace_id", ""), "name": roots[0].get("name", "") if roots else "",
            "start_ns": start, "duration_ms": round((end - start) / 1e6, 3), "spans": rows}


def container_of(node_id: str) -> str | None:
    """The container id of a containers-view node id (`<id>;<container>`), else None."""
    return ids.parse_container_node_id(node_id)
