"""Scope app benchmarks: merging the window's reports, rendering topologies, websocket
diffs, for 3 and 50 simulated hosts.

The hosts are built from the real probe's sample reports (tests/fixtures/scope-1.13/
probe-post, reports 001-004: a full, two deltas, a full): each host gets the four with
its host name, addresses and probe id rewritten, so a window holds 4 reports per host,
as a 15 s window of a probe publishing every 3 s does. The samples have no containers;
each host's five python processes are put in containers of their own (Container nodes
with the process's container id, name, hostname, image and IP) so that the containers
view has nodes and edges to render.

Each figure is printed beside baselines measured in the same run on the same data, as
ratios (this machine is shared; only ratios compare across runs):
- `json.dumps` of the merged report's JSON form (what `GET /api/report` costs to write);
- a plain deep copy of that JSON form (`json.loads(json.dumps(...))` excluded: a dict
  comprehension copy of every node's dicts).

    .venv/bin/python -m bench.scope_app [--hosts 3 50] [--repeat 5]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

from services.scope.app.render.api import ReportRender, topology_diff
from services.scope.app.render.view import from_report
from services.scope.codec import decode_report
from services.scope.report import Node, Report, merge_reports, report_from_json, report_to_json
from tests.reference import scope_dir

PYTHONS = ("4", "5", "92", "93", "95")


def sample_reports() -> list[dict]:
    out = []
    for i in range(1, 5):
        body = (scope_dir() / "probe-post" / f"report-00{i}.msgpack.gz").read_bytes()
        out.append(report_to_json(decode_report(body, "application/msgpack", "gzip")))
    return out


def host_reports(samples: list[dict], n: int) -> list[Report]:
    """Host n's four reports: names, addresses and probe id its own, plus containers."""
    text = [json.dumps(s) for s in samples]
    out = []
    for t in text:
        t = t.replace("sca1-host", f"host{n:02d}").replace("10.77.0.", f"10.{n}.0.")
        t = t.replace("100f401f58172167", f"{n:016x}")
        report = report_from_json(json.loads(t))
        add_containers(report, f"host{n:02d}", n)
        out.append(report)
    return out


def add_containers(report: Report, host: str, n: int) -> None:
    host_id = f"{host};<host>"
    for pid in PYTHONS:
        proc = report.process.nodes.get(f"{host};{pid}")
        if proc is None:
            continue
        ts = max(ts for ts, _ in proc.latest.values()) if proc.latest else 0
        cid = f"{n:04x}{int(pid):08x}"
        report.process.replace_node(proc.with_latest("docker_container_id", ts, cid))
        report.container.add_node(Node(f"{cid};<container>", "container", latest={
            "docker_container_id": (ts, cid), "docker_container_name": (ts, f"py-{pid}"),
            "docker_container_hostname": (ts, f"py{pid}.{host}"), "docker_image_id": (ts, "img1"),
            "docker_container_state": (ts, "running"), "host_node_id": (ts, host_id)},
            sets={"docker_container_ips_with_scopes": (f";10.{n}.1.{pid}",)}, parents={"host": (host_id,)}))
    report.container_image.add_node(Node("img1;<container_image>", "container_image", latest={
        "docker_image_id": (0, "img1"), "docker_image_name": (0, "python:3.11")}))


def timed(fn, repeat: int) -> float:
    """Median seconds of `repeat` calls."""
    runs = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - t)
    return statistics.median(runs)


def copy_json(d):
    if isinstance(d, dict):
        return {k: copy_json(v) for k, v in d.items()}
    if isinstance(d, list):
        return [copy_json(v) for v in d]
    return d


def bench_hosts(samples: list[dict], hosts: int, repeat: int) -> list[tuple[str, float]]:
    per_host = [host_reports(samples, n) for n in range(1, hosts + 1)]
    window = [r for reports in per_host for r in reports]
    merged = merge_reports(window)
    as_json = report_to_json(merged)
    # the next window: every host's first report aged out, a fresh full one arrived
    later = merge_reports([r for reports in per_host for r in reports[1:] + reports[-1:]])

    def render(topology: str, report: Report = merged, query=None):
        return ReportRender(from_report(report)).summaries(topology, query or {})

    before, after = render("processes", merged), render("processes", later)
    diff = topology_diff(before, after)
    changed = sum(len(diff[k] or ()) for k in ("add", "update", "remove"))
    nodes = sum(len(t.nodes) for _, t in merged.topologies())
    figures = [
        (f"merge of {len(window)} reports ({nodes} nodes)", timed(lambda: merge_reports(window), repeat)),
        ("render processes", timed(lambda: render("processes"), repeat)),
        ("render containers", timed(lambda: render("containers"), repeat)),
        ("render hosts", timed(lambda: render("hosts"), repeat)),
        ("topology list (every topology's stats)",
         timed(lambda: ReportRender(from_report(merged)).topology_list({}), repeat)),
        (f"websocket diff, processes ({changed} of {len(before)} changed; + json)",
         timed(lambda: json.dumps(topology_diff(before, after)), repeat)),
        ("GET /api/report body (report_to_json + json.dumps)",
         timed(lambda: json.dumps(report_to_json(merged)), repeat)),
    ]
    baselines = [("json.dumps(report JSON)", timed(lambda: json.dumps(as_json), repeat)),
                 ("deep copy of report JSON", timed(lambda: copy_json(as_json), repeat))]
    return figures, baselines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, nargs="+", default=[3, 50])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    samples = sample_reports()
    for hosts in args.hosts:
        figures, baselines = bench_hosts(samples, hosts, args.repeat)
        print(f"\n{hosts} hosts (median of {args.repeat})")
        names = [b[0] for b in baselines]
        print(f"  {'':52} {'ms':>9}  " + "  ".join(f"x {n:>26}" for n in names))
        for name, b in baselines:
            print(f"  {'baseline: ' + name:52} {b * 1e3:9.2f}")
        for name, seconds in figures:
            ratios = "  ".join(f"{seconds / b:28.2f}" for _, b in baselines)
            print(f"  {name:52} {seconds * 1e3:9.2f}  {ratios}")


if __name__ == "__main__":
    main()
