"""The app's render (services/scope/app/render) against the real Scope 1.13 app.

Golden tests hold our answers beside the real app's (tests/fixtures/scope-1.13/app).
Two runs of the real Scope are in the fixtures:
- run A: the app's answers in app/ (api_topology_*.json, node details, websocket
  frames) and `api_report.json`, the merged report that app served at the same moment.
  Rendering that report must give the same topologies, byte for byte as JSON values.
  The node details and websocket frames were fetched ~3 s later, so there metric
  samples, a few metric values, the host's uptime and short-lived `sleep` processes
  legitimately differ: the tests say where.
- run B: the probe's POSTed reports in probe-post/ and the answers of an app that was
  sent report 004 (`post-json-test_*`). Rendering report 004 must give those answers;
  merging 001-004 must keep the nodes and edges.
"""
from __future__ import annotations

import copy
import itertools
import json
from functools import lru_cache

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.scope.app.render.api import ReportRender, topology_diff
from services.scope.app.render.view import from_report
from services.scope.codec import decode_report
from services.scope.report import Metric, Node, Report, merge_reports, report_from_json, report_to_json
from tests.reference import scope_dir

APP = scope_dir() / "app"
POSTS = scope_dir() / "probe-post"
T0 = 1_796_318_000 * 1_000_000_000


def answer(name: str):
    with open(APP / name) as f:
        return json.load(f)


@lru_cache(maxsize=None)
def real_app_report() -> Report:
    return report_from_json(answer("api_report.json"))


@lru_cache(maxsize=None)
def posted(i: int) -> Report:
    body = (POSTS / f"report-00{i}.msgpack.gz").read_bytes()
    return decode_report(body, "application/msgpack", "gzip")


def render(report: Report) -> ReportRender:
    return ReportRender(from_report(report))


def without_samples(value):
    """A deep copy with every metric row's samples dropped (they are windows in time)."""
    value = copy.deepcopy(value)
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if "samples" in v and "min" in v and "max" in v:
                v.pop("samples")
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return value


# -- run A: the real app's merged report and its answers ---------------------------------
@pytest.mark.parametrize("topology", ["processes", "processes-by-name", "hosts", "containers", "weave"])
def test_topology_summaries_equal_the_real_apps(topology):
    ours = render(real_app_report()).summaries(topology, {})
    assert ours == answer(f"api_topology_{topology}.json")["nodes"]


def test_topology_list_with_stats_and_options_equals_the_real_apps():
    assert render(real_app_report()).topology_list({}) == answer("api_topology.json")


def test_any_query_switches_on_the_default_options():
    rr = render(real_app_report())
    plain, with_t = rr.summaries("processes", {}), rr.summaries("processes", {"t": "1s"})
    assert len(plain) == 21  # the README: 21 nodes by GET ...
    frame = answer("api_topology_processes_ws_t1s-msg-1.json")
    assert sorted(with_t) == sorted(n["id"] for n in frame["add"])  # ... and 5 by the websocket
    for node in frame["add"]:  # the frame came a moment later: metric values may differ
        ours = with_t[node["id"]]
        assert {k: v for k, v in ours.items() if k != "metrics"} == {k: v for k, v in node.items() if k != "metrics"}
    assert rr.summaries("processes", {"unconnected": "show"}) == plain
    listed = {t["url"]: t for t in rr.topology_list({"t": "1s"})}
    assert listed["/api/topology/processes"]["stats"] == {
        "edge_count": 3, "filtered_nodes": 16, "node_count": 5, "nonpseudo_node_count": 5}


@pytest.mark.parametrize("pid", ["5", "93"])
def test_process_details_equal_the_real_apps(pid):
    ours = render(real_app_report()).details("processes", f"sca1-host;{pid}", {})
    theirs = answer(f"api_topology_processes_sca1-host_{pid}.json")["node"]
    assert without_samples(ours) == without_samples(theirs)
    # Samples: the details were fetched ~3 s after the report; every sample we show is
    # one they show, and we show the 15 s window up to the report (11 of their 14).
    for mine, real in zip(ours["metrics"], theirs["metrics"]):
        real_samples = {s["date"]: s["value"] for s in real["samples"]}
        assert len(mine["samples"]) == 11
        assert all(real_samples[s["date"]] == s["value"] for s in mine["samples"])


def test_host_details_equal_the_real_apps_but_for_time():
    report = real_app_report()
    ours = render(report).details("hosts", "sca1-host;<host>", {})
    theirs = answer("api_topology_hosts_sca1-host__host.json")["node"]
    assert ours["connections"] == theirs["connections"]
    assert ours["controls"] == theirs["controls"]
    assert ours["adjacency"] == theirs["adjacency"] == ["sca1-host;<host>"]
    # the host's uptime went on for 3 s; metric values moved (min and max did not)
    assert [r for r in ours["metadata"] if r["id"] != "uptime"] == \
        [r for r in theirs["metadata"] if r["id"] != "uptime"]
    assert [(m["id"], m["min"], m["max"]) for m in ours["metrics"]] == \
        [(m["id"], m["min"], m["max"]) for m in theirs["metrics"]]
    (ours_group,), (their_group,) = ours["children"], theirs["children"]
    assert {k: v for k, v in ours_group.items() if k != "nodes"} == {k: v for k, v in their_group.items() if k != "nodes"}
    mine = {n["id"]: n for n in ours_group["nodes"]}
    real = {n["id"]: n for n in their_group["nodes"]}
    # three `sleep`s started after the report was taken; all of ours are theirs
    assert set(mine) <= set(real)
    assert all(real[pid]["label"] == "sleep" and pid not in report.process.nodes for pid in set(real) - set(mine))
    for pid, node in mine.items():
        assert {k: v for k, v in node.items() if k != "metrics"} == {k: v for k, v in real[pid].items() if k != "metrics"}


def test_group_node_details_equal_the_real_apps():
    ours = render(real_app_report()).details("processes-by-name", "/usr/bin/python3", {})
    assert ours == answer("api_topology_processes-by-name__usr_bin_python3.json")["node"]


def test_probes_list_the_reporting_probe():
    assert render(real_app_report()).probes() == answer("api_probes.json")


# -- run B: the probe's own reports ------------------------------------------------------
def test_report_004_renders_as_the_real_app_rendered_it():
    rr = render(posted(4))
    assert rr.summaries("hosts", {}) == answer("post-json-test_api_topology_hosts.json")["nodes"]
    assert rr.probes() == answer("post-json-test_api_probes.json")


def test_merged_posts_keep_every_node_and_edge():
    merged = merge_reports(posted(i) for i in range(1, 5))
    rr = render(merged)
    procs = rr.summaries("processes", {})
    assert set(procs) == set().union(*(posted(i).process.nodes for i in range(1, 5)))
    edges = {(k, dst) for k, n in procs.items() for dst in n.get("adjacency", ())}
    assert edges == {("sca1-host;92", "sca1-host;5"), ("sca1-host;93", "sca1-host;5")}  # the echo clients
    assert procs["sca1-host;370"]["label"] == "curl"
    hosts = rr.summaries("hosts", {})
    real = answer("post-json-test_api_topology_hosts.json")["nodes"]  # that app held 004 alone
    assert {k: v for k, v in hosts["sca1-host;<host>"].items() if k != "metrics"} == \
        {k: v for k, v in real["sca1-host;<host>"].items() if k != "metrics"}
    memory = {m["id"]: m for m in hosts["sca1-host;<host>"]["metrics"]}["host_mem_usage_bytes"]
    assert memory["min"] == 650039296.0  # report 002's low, which the one-report app never saw


# -- rendering is a pure function of the merged report ------------------------------------
def all_answers(report: Report) -> str:
    rr = render(report)
    out = {"list": rr.topology_list({}), "probes": rr.probes()}
    for t in ("processes", "processes-by-name", "containers", "containers-by-hostname", "containers-by-image",
              "hosts", "weave"):
        for query in ({}, {"t": "1s"}):
            out[f"{t}{query}"] = rr.summaries(t, query)
            for nid in sorted(out[f"{t}{query}"])[:3]:
                out[f"{t}/{nid}{query}"] = rr.details(t, nid, query)
    return json.dumps(out, sort_keys=True)


@settings(max_examples=12, deadline=None)
@given(st.permutations([1, 2, 3, 4, 4, 2]))
def test_answers_depend_only_on_the_merged_report(order):
    """Any order of the same reports (and duplicates: merge is idempotent) renders alike,
    and rendering leaves the report as it was."""
    merged = merge_reports(posted(i) for i in order)
    before = report_to_json(merged)
    assert all_answers(merged) == all_answers(merge_reports(posted(i) for i in (1, 2, 3, 4)))
    assert report_to_json(merged) == before


def test_a_render_answers_the_same_twice():
    rr = render(real_app_report())
    first = json.dumps([rr.summaries("hosts", {}), rr.details("hosts", "sca1-host;<host>", {})], sort_keys=True)
    assert json.dumps([rr.summaries("hosts", {}), rr.details("hosts", "sca1-host;<host>", {})], sort_keys=True) == first


# -- websocket diffs -----------------------------------------------------------------------
def test_diff_of_nothing_new_is_all_null_and_the_first_frame_resets():
    state = render(real_app_report()).summaries("processes", {"t": "1s"})
    first = topology_diff(None, state)
    assert first["reset"] is True and first["update"] is None and first["remove"] is None
    assert [n["id"] for n in first["add"]] == sorted(state)
    assert topology_diff(state, state) == answer("api_topology_processes_ws_t1s-msg-2.json")


def test_diff_names_added_updated_and_removed_nodes():
    before = {"a": {"id": "a", "label": "x"}, "b": {"id": "b", "label": "y"}}
    after = {"b": {"id": "b", "label": "z"}, "c": {"id": "c", "label": "w"}}
    assert topology_diff(before, after) == {"add": [after["c"]], "update": [after["b"]], "remove": ["a"]}


# -- synthetic reports: pseudo nodes, containers, the overlay ----------------------------
def host_node(name: str, networks=("10.0.0.0/24", "10.32.0.0/12"), probe="aaaa") -> Node:
    return Node(f"{name};<host>", "host", latest={"host_name": (T0, name), "control_probe_id": (T0, probe),
                                                  "host_node_id": (T0, f"{name};<host>")},
                sets={"local_networks": networks})


def process_node(host: str, pid: str, name: str, **latest: str) -> Node:
    values = {"pid": pid, "name": name, **latest}
    return Node(f"{host};{pid}", "process", latest={k: (T0, v) for k, v in values.items()},
                parents={"host": [f"{host};<host>"]},
                metrics={"process_cpu_usage_percent": Metric([(T0, 1.239)], max=100.0)})


def endpoint(eid: str, host: str | None = None, pid: str | None = None, to: tuple = ()) -> Node:
    latest = {}
    if host:
        latest["host_node_id"] = (T0, f"{host};<host>")
    if pid:
        latest["pid"] = (T0, pid)
    return Node(eid, "endpoint", latest=latest, adjacency=to)


def synthetic() -> Report:
    r = Report.make(T0, "1")
    r.host.add_node(host_node("h1")).add_node(host_node("h2"))
    r.process.metric_templates = {"process_cpu_usage_percent": {"id": "process_cpu_usage_percent",
                                                                "label": "CPU", "format": "percent", "priority": 1}}
    r.process.add_node(process_node("h1", "10", "web", docker_container_id="c1"))
    r.process.add_node(process_node("h1", "11", "cron"))
    r.process.add_node(process_node("h2", "20", "db", docker_container_id="c2"))
    r.container.add_node(Node("c1;<container>", "container", latest={
        "docker_container_id": (T0, "c1"), "docker_container_name": (T0, "web-1"),
        "docker_container_hostname": (T0, "web"), "docker_image_id": (T0, "i1"),
        "host_node_id": (T0, "h1;<host>"), "docker_container_state": (T0, "running")},
        parents={"host": ["h1;<host>"]}, sets={"docker_container_ips_with_scopes": [";10.32.0.1"]}))
    r.container.add_node(Node("c2;<container>", "container", latest={
        "docker_container_id": (T0, "c2"), "docker_container_name": (T0, "db-1"),
        "docker_container_hostname": (T0, "db"), "host_node_id": (T0, "h2;<host>"),
        "docker_container_state": (T0, "running")}, parents={"host": ["h2;<host>"]},
        sets={"docker_container_ips_with_scopes": [";10.32.0.2"]}))
    r.container_image.add_node(Node("i1;<container_image>", "container_image", latest={
        "docker_image_id": (T0, "i1"), "docker_image_name": (T0, "registry:5000/org/web:1.0")}))
    # web (h1) -> db (h2) over the overlay; web -> the internet; the internet -> web
    r.endpoint.add_node(endpoint(";10.32.0.1;40000", "h1", "10", (";10.32.0.2;5432",)))
    r.endpoint.add_node(endpoint(";10.32.0.2;5432", "h2", "20"))
    r.endpoint.add_node(endpoint(";10.32.0.1;40001", "h1", "10", (";93.184.216.34;443",)))
    r.endpoint.add_node(endpoint(";93.184.216.34;443"))
    r.endpoint.add_node(endpoint(";198.51.100.7;51000", to=(";10.32.0.1;80",)))
    r.endpoint.add_node(endpoint(";10.32.0.1;80", "h1", "10"))
    r.endpoint.add_node(endpoint(";10.0.0.99;1234", to=(";10.32.0.1;80",)))  # unowned local: dropped
    return r


def test_processes_with_the_internet_as_pseudo_nodes():
    rr = render(synthetic())
    procs = rr.summaries("processes", {})
    assert procs["h1;10"]["adjacency"] == ["h2;20", "out-theinternet"]
    assert procs["in-theinternet"]["adjacency"] == ["h1;10"]
    assert procs["in-theinternet"]["label"] == "The Internet" and procs["in-theinternet"]["pseudo"] is True
    assert procs["out-theinternet"]["labelMinor"] == "Outbound connections"
    assert "h1;11" in procs and "h1;11" not in rr.summaries("processes", {"t": "1s"})  # unconnected
    assert procs["h1;10"]["metrics"][0]["value"] == 1.23  # truncated to 2 decimals, as Scope
    detail = rr.details("processes", "in-theinternet", {})
    (row,) = detail["connections"][1]["connections"]
    assert row["label"] == "web"  # the internet's rows name each remote address of its own
    assert row["metadata"][0] == {"id": "remote", "label": "", "value": "198.51.100.7"}


def test_containers_by_process_and_by_ip():
    rr = render(synthetic())
    conts = rr.summaries("containers", {})
    assert set(conts) == {"c1;<container>", "c2;<container>", "in-theinternet", "out-theinternet"}
    assert conts["c1;<container>"]["label"] == "web-1"
    assert conts["c1;<container>"]["rank"] == "registry:5000/org/web"  # the image's name, without tag
    assert conts["c1;<container>"]["adjacency"] == ["c2;<container>", "out-theinternet"]
    assert {p["topologyId"] for p in conts["c1;<container>"]["parents"]} == {"containers-by-image", "hosts"}
    hidden = rr.summaries("containers", {"t": "1s"})  # pseudo=hide
    assert set(hidden) == {"c1;<container>", "c2;<container>", "in-theinternet", "out-theinternet"}
    shown = rr.summaries("containers", {"pseudo": "show"})
    assert "pseudo:uncontained:h1" not in shown  # cron has no edges: the base filter drops it
    by_name = rr.summaries("containers-by-hostname", {})
    assert by_name["web"]["labelMinor"] == "1 container" and by_name["web"]["stack"] is True
    images = rr.summaries("containers-by-image", {})
    assert images["org/web;<container_image>"]["label"] == "registry:5000/org/web"


def test_hosts_join_their_processes_containers_and_endpoints():
    rr = render(synthetic())
    hosts = rr.summaries("hosts", {})
    assert hosts["h1;<host>"]["adjacency"] == ["h2;<host>", "out-theinternet"]
    detail = rr.details("hosts", "h2;<host>", {})
    (inbound,) = detail["connections"][0]["connections"]
    assert inbound["nodeId"] == "h1;<host>" and inbound["metadata"] == [
        {"id": "port", "label": "", "value": "5432"}, {"id": "count", "label": "", "value": "1"}]
    assert [g["label"] for g in detail["children"]] == ["Containers", "Processes"]


def test_weave_peers_and_unmanaged_peers():
    r = synthetic()
    r.overlay.add_node(Node("#aa:aa:aa:aa:aa:aa", "overlay", latest={
        "weave_peer_nick_name": (T0, "h1"), "weave_peer_name": (T0, "aa:aa:aa:aa:aa:aa"),
        "host_node_id": (T0, "h1;<host>")}, adjacency=["#bb:bb:bb:bb:bb:bb"], parents={"host": ["h1;<host>"]}))
    r.overlay.add_node(Node("#bb:bb:bb:bb:bb:bb", "overlay", latest={"weave_peer_nick_name": (T0, "h9")}))
    r.overlay.add_node(Node("#docker_peer_x", "overlay"))
    peers = render(r).summaries("weave", {})
    assert set(peers) == {"#aa:aa:aa:aa:aa:aa", "pseudo:unmanaged:h9"}
    assert peers["#aa:aa:aa:aa:aa:aa"]["label"] == "h1"
    assert peers["#aa:aa:aa:aa:aa:aa"]["labelMinor"] == "aa:aa:aa:aa:aa:aa"
    assert peers["#aa:aa:aa:aa:aa:aa"]["adjacency"] == ["pseudo:unmanaged:h9"]
    assert peers["pseudo:unmanaged:h9"]["label"] == "Unmanaged"


def test_an_endpoint_reused_by_two_connections_is_not_trusted():
    r = synthetic()
    r.endpoint.add_node(endpoint(";10.32.0.1;40000", "h1", "10", (";10.32.0.9;1",)))
    procs = render(r).summaries("processes", {})
    assert procs["h1;10"]["adjacency"] == ["out-theinternet"]  # the reused endpoint's edges are gone


def test_details_of_a_node_the_filters_hide_are_still_served():
    rr = render(synthetic())
    assert rr.details("processes", "h1;11", {"unconnected": "hide"})["label"] == "cron"
    assert rr.details("processes", "h9;1", {}) is None


def test_unknown_topology():
    with pytest.raises(KeyError):
        render(synthetic()).summaries("nope", {})


def test_every_pair_of_options_renders():
    rr = render(synthetic())
    for system, stopped, pseudo in itertools.product(("all", "system", "application"), ("stopped", "running", "both"),
                                                     ("show", "hide")):
        nodes = rr.summaries("containers", {"system": system, "stopped": stopped, "pseudo": pseudo})
        real = {k for k, n in nodes.items() if not n.get("pseudo")}
        assert real == (set() if system == "system" or stopped == "stopped" else {"c1;<container>", "c2;<container>"})


# -- ours: the overlay carrying each link, blocked attempts ------------------------------
# The reports come from the probe's own reporters (services/scope/probe), so these tests
# also hold the probe and the app to one key convention (docs/scope.md).
def weave_report(sample: str, hostname: str, blocked=()) -> Report:
    from services.scope.probe.overlay import OverlayReporter
    status = json.loads((scope_dir().parent / "weave-2.8" / "samples" / sample).read_text())
    r = Report.make(T0, "1")
    r.overlay = OverlayReporter(hostname).report(status, list(blocked), T0)
    r.host.add_node(host_node(hostname))
    return r


def test_weave_peers_carry_their_links_overlay_encryption_and_mtu():
    from shared.schemas.npc import BlockedFlow
    flow = BlockedFlow(protocol="tcp", src="10.32.0.9", sport=40000, dst="10.32.0.1", dport=80, at_unix=1.0, count=2)
    rr = render(weave_report("report-h1-encrypted.json", "h1", [flow]))
    peers = rr.summaries("weave", {})
    assert set(peers) == {"#aa:00:00:00:00:01", "pseudo:unmanaged:h2", "pseudo:unmanaged:h3"}
    h1 = peers["#aa:00:00:00:00:01"]
    assert h1["weave_py_links"] == [
        {"peer": "pseudo:unmanaged:h2", "peerName": "aa:00:00:00:00:02", "overlay": "sleeve", "encrypted": True,
         "mtu": 1414, "state": "established"},
        {"peer": "pseudo:unmanaged:h3", "peerName": "aa:00:00:00:00:03", "overlay": "sleeve", "encrypted": True,
         "mtu": 1414, "state": "established"}]
    assert h1["adjacency"] == ["pseudo:unmanaged:h3"]  # h1's outbound connection
    assert {"id": "weave_encryption", "label": "Encryption", "value": "enabled", "priority": 4.0} in h1["metadata"]
    assert {r["id"]: r["value"] for r in h1["metadata"]}["weave_py_blocked_count"] == "1"
    tables = {t["id"]: t for t in h1["tables"]}
    (link_row, _) = tables["weave_py_links_table_"]["rows"]
    assert link_row["entries"]["weave_py_link_peer"] == "aa:00:00:00:00:02(h2)"
    assert len(tables["weave_py_blocked_table_"]["rows"]) == 1
    assert "weave_py_links" not in peers["pseudo:unmanaged:h2"]
    detail = rr.details("weave", "#aa:00:00:00:00:01", {})
    assert detail["weave_py_links"] == h1["weave_py_links"] and detail["parents"][0]["id"] == "h1;<host>"


def test_a_peer_with_its_own_probe_is_its_own_node_in_links():
    both = merge_reports([weave_report("report-h1.json", "h1"), weave_report("report-h1.json", "h1")])
    peer = Node("#aa:00:00:00:00:02", "overlay", latest={"host_node_id": (T0, "h2;<host>"),
                                                         "weave_peer_nick_name": (T0, "h2")})
    both.overlay.add_node(peer)
    links = render(both).summaries("weave", {})["#aa:00:00:00:00:01"]["weave_py_links"]
    assert [(link["peer"], link["overlay"], link["encrypted"]) for link in links] == [
        ("#aa:00:00:00:00:02", "sleeve", False), ("pseudo:unmanaged:h3", "sleeve", False)]


def test_blocked_attempts_follow_the_nodes_up():
    from services.scope.probe.endpoint import EndpointReporter
    from shared.schemas.npc import BlockedFlow
    r = synthetic()
    flow = BlockedFlow(protocol="tcp", src="10.32.0.2", sport=41000, dst="10.32.0.1", dport=80, at_unix=1.0)
    blocked, _ = EndpointReporter("h1").report([], [], [flow], {}, T0)  # h1's npc dropped db -> web:80
    r.endpoint.merge_in(blocked)
    rr = render(r)
    conts = rr.summaries("containers", {})
    assert conts["c2;<container>"]["weave_py_blocked"] == ["c1;<container>"]
    assert "c1;<container>" in conts["c2;<container>"]["adjacency"]  # Scope's UI still draws the attempt
    assert "weave_py_blocked" not in conts["c1;<container>"]
    assert rr.summaries("hosts", {})["h2;<host>"]["weave_py_blocked"] == ["h1;<host>"]
    assert rr.details("containers", "c2;<container>", {})["weave_py_blocked"] == ["c1;<container>"]
    assert all("weave_py_blocked" not in n for n in render(synthetic()).summaries("containers", {}).values())


def test_cached_answers_are_bounded_and_still_right():
    from services.scope.app.render.api import MAX_CACHED_ANSWERS
    rr = render(real_app_report())
    first = rr.summaries("processes", {})
    for i in range(MAX_CACHED_ANSWERS + 5):
        rr.summaries("processes", {"junk": str(i)})
    assert len(rr._summaries) == MAX_CACHED_ANSWERS
    assert rr.summaries("processes", {}) == first


@pytest.mark.parametrize("addr,local", [("10.0.0.7", True), ("10.0.1.7", False), ("10.47.255.1", True),
                                        ("10.48.0.1", False), ("93.184.216.34", False), ("::1", None),
                                        ("fe80::1", None), ("not-an-ip", None)])
def test_local_networks(addr, local):
    from services.scope.app.render.pipeline import LocalNetworks
    nets = LocalNetworks(["10.0.0.1/24", "10.32.0.0/12", "garbage", "fd00::/8"])
    assert nets.contains(addr) is local
    assert nets.contains(addr) is local  # remembered, same answer


def test_known_cloud_services_get_their_own_pseudo_node():
    r = synthetic()
    r.endpoint.add_node(endpoint(";10.32.0.1;40002", "h1", "10", (";52.1.2.3;443",)))
    r.endpoint.add_node(endpoint(";52.1.2.3;443"))
    r.endpoint.add_node(endpoint(";10.32.0.1;40003", "h1", "10", (";52.1.2.4;443",)))
    r.endpoint.add_node(endpoint(";52.1.2.4;443"))
    r.dns = {"52.1.2.3": (("s3.eu-west-1.amazonaws.com",), ()),
             "52.1.2.4": (("ec2-52-1-2-4.compute.amazonaws.com",), ())}  # ec2 hosts: just the internet
    procs = render(r).summaries("processes", {})
    service = procs["service-s3.eu-west-1.amazonaws.com"]
    assert (service["label"], service["shape"], service["pseudo"]) == ("s3.eu-west-1.amazonaws.com", "cloud", True)
    assert procs["h1;10"]["adjacency"] == ["h2;20", "out-theinternet", "service-s3.eu-west-1.amazonaws.com"]
