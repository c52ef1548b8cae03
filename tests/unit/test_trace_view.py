"""`weave trace` rendering from span files: trees by parent, timings, several hosts merged."""
from __future__ import annotations

import json

from weavectl.trace_view import build_traces, recent, render


def span(trace, sid, parent, name, start, end, service="weave-x", host="h1"):
    return {"trace_id": trace, "span_id": sid, "parent_id": parent, "name": name, "service": service,
            "host": host, "kind": "INTERNAL", "start_ns": start, "end_ns": end, "status": "UNSET",
            "attributes": {}}


def test_tree_and_timings(tmp_path):
    spans = [
        span("t1", "a", None, "weave attach", 0, 12_000_000, "weave-cli"),
        span("t1", "b", "a", "weave.datapath.attach process", 1_000_000, 11_000_000, "weave-datapath"),
        span("t1", "c", "b", "weave.ipam.allocate process", 2_000_000, 4_500_000, "weave-ipam"),
        span("t0", "z", None, "older", 0, 1_000, "weave-gossip"),
    ]
    traces = build_traces(spans)
    assert [t[0].span["name"] for t in traces] == ["older", "weave attach"] or len(traces) == 2
    text = render(next(t for t in traces if t[0].span["trace_id"] == "t1"))
    lines = text.splitlines()
    assert lines[0] == "trace t1  12.00 ms"
    assert "weave attach" in lines[1] and lines[1].startswith("  +")
    assert lines[2].startswith("    +") and "datapath" in lines[2] and "10.00 ms" in lines[2]
    assert lines[3].startswith("      +") and "2.50 ms" in lines[3] and "(weave-ipam@h1)" in lines[3]


def test_recent_merges_hosts_and_filters(tmp_path):
    h1, h2 = tmp_path / "h1", tmp_path / "h2"
    h1.mkdir(), h2.mkdir()
    (h1 / "cli.jsonl").write_text(json.dumps(span("t1", "a", None, "weave attach", 0, 10)) + "\n")
    (h2 / "gossip.jsonl").write_text(json.dumps(span("t1", "b", "a", "gossip receipt", 5, 9, host="h2")) + "\n"
                                     + json.dumps(span("t2", "x", None, "tick", 20, 30, host="h2")) + "\n")
    out = recent([h1, h2], last=5, match="attach")
    assert len(out) == 1 and "gossip receipt" in out[0] and "@h2" in out[0]
    assert len(recent([h1, h2], last=1)) == 1


def test_cut_lines_are_skipped(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"trace_id": "t", "span_id"\n' + json.dumps(span("t", "a", None, "ok", 0, 1)) + "\n")
    assert len(recent([tmp_path], last=3)) == 1
