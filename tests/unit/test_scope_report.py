"""The Scope report model: Scope's JSON form against the real 1.13 samples, merge as a
join (tables and properties), un-merge (Scope's delta) identities, node ids."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings, strategies as st

from services.scope import ids
from services.scope.report import (
    GO_ZERO_TIME_NS, TOPOLOGY_NAMES, TOPOLOGY_SPECS, Metric, Node, Report, Topology,
    format_rfc3339nano, merge_latest, merge_reports, merge_sets, parse_rfc3339,
    report_from_json, report_to_json)
from shared.errors import LocalProtocolError, RemoteProtocolError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "scope-1.13"
POSTS = sorted((FIXTURES / "probe-post").glob("report-00?.json"))
STDOUT = sorted((FIXTURES / "probe-stdout-json").glob("report-stdout-00?.json"))
APP_REPORT = FIXTURES / "app" / "api_report.json"
S = 1_000_000_000


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def sample(n: int) -> Report:
    return report_from_json(load(FIXTURES / "probe-post" / f"report-00{n}.json"))


# ---------------------------------------------------------------- strategies

_keys = st.sampled_from(["k1", "k2", "k3"])
_values = st.sampled_from(["", "x", "y", "z"])
_times = st.integers(0, 4)  # few, so that merges meet equal times
_floats = st.sampled_from([-1.0, 0.0, 1.5, 2.0, 1e19])
_plain = st.sampled_from([{}, {"id": "a", "label": "A", "priority": 1.0},
                          {"id": "a", "label": "B", "priority": 2.0}])


_samples = st.lists(st.tuples(_times, _floats), max_size=4)
_bounds = st.none() | _floats
_string_sets = st.dictionaries(_keys, st.lists(_values, max_size=3), max_size=2)
_latests = st.dictionaries(_keys, st.tuples(_times, _values), max_size=3)
_adjacency = st.lists(st.sampled_from("abc"), max_size=3)


@st.composite
def metrics(draw) -> Metric:
    return Metric(draw(_samples), min=draw(_bounds), max=draw(_bounds))


_metric_maps = st.dictionaries(st.sampled_from(["cpu", "mem"]), metrics(), max_size=2)


@st.composite
def nodes(draw, key: str, topology: str, children: st.SearchStrategy = st.just(())) -> Node:
    return Node(
        draw(st.sampled_from([key, key, ""])), draw(st.sampled_from([topology, topology, ""])),
        latest=draw(_latests), sets=draw(_string_sets), adjacency=draw(_adjacency),
        parents=draw(_string_sets), metrics=draw(_metric_maps), children=draw(children))


_children = st.lists(st.sampled_from(["c1", "c2"]).flatmap(lambda k: nodes(k, "container")),
                     max_size=2)


@st.composite
def topologies(draw, name: str) -> Topology:
    keys = draw(st.lists(st.sampled_from(["n1", "n2", "n3"]), unique=True, max_size=3))
    label = draw(st.sampled_from([("", ""), ("process", "processes"), ("host", "hosts")]))
    return Topology(
        draw(st.sampled_from(["", "circle", "square"])), draw(st.sampled_from(["", "camera"])),
        label[0], label[1], nodes={k: draw(nodes(k, name, _children)) for k in keys},
        controls=draw(st.dictionaries(st.just("c"), _plain, max_size=1)),
        metadata_templates=draw(st.dictionaries(st.sampled_from(["m1", "m2"]), _plain,
                                                max_size=2)),
        metric_templates=draw(st.dictionaries(st.just("t"), _plain, max_size=1)),
        table_templates=draw(st.dictionaries(st.just("t"), _plain, max_size=1)))


@st.composite
def reports(draw) -> Report:
    dns = draw(st.dictionaries(st.sampled_from(["10.0.0.1", "127.0.0.1"]), st.tuples(
        st.lists(_values, max_size=2).map(lambda v: tuple(sorted(set(v)))),
        st.lists(_values, max_size=2).map(lambda v: tuple(sorted(set(v))))), max_size=2))
    plugins = draw(st.lists(st.sampled_from([{"id": "p1", "label": "one"},
                                             {"id": "p2", "label": "two"}]),
                            unique_by=lambda p: p["id"], max_size=2))
    return Report(
        ts=draw(st.sampled_from([GO_ZERO_TIME_NS, 1 * S, 2 * S])),
        id=draw(st.sampled_from(["", "1", "2"])), window=draw(st.sampled_from([0, 3 * S])),
        sampling=draw(st.tuples(st.integers(0, 3), st.integers(0, 3))),
        shortcut=draw(st.booleans()), dns=dns, plugins=sorted(plugins, key=lambda p: p["id"]),
        process=draw(topologies("process")), endpoint=draw(topologies("endpoint")),
        host=draw(topologies("host")))


# ---------------------------------------------------------------- Scope's JSON form

@pytest.mark.parametrize("path", POSTS + STDOUT + [APP_REPORT], ids=lambda p: p.name)
def test_json_samples_round_trip_exactly(path: Path) -> None:
    """Which keys are present, null or omitted, per report, topology and node: as Scope
    1.13 wrote them (probe POSTs decoded, the probe's own JSON, the app's merged report)."""
    wire = load(path)
    report = report_from_json(wire)
    assert report.process.nodes and report.host.nodes
    assert report_to_json(report) == wire
    # the 30 keys in Scope's order (the probe-post .json files have theirs sorted)
    assert list(report_to_json(report)) == list(load(STDOUT[0]))


def test_json_form_of_a_probe_node_and_an_empty_topology() -> None:
    report = Report.make(ts=1 * S, report_id="42")
    report.endpoint.add_node(Node(";10.0.0.1;80", "endpoint").with_adjacent(";10.0.0.2;99"))
    wire = report_to_json(report)
    assert wire["Endpoint"] == {"nodes": {";10.0.0.1;80": {
        "id": ";10.0.0.1;80", "topology": "endpoint", "sets": None,
        "adjacency": [";10.0.0.2;99"], "parents": None, "children": None}}}
    assert wire["Pod"] == {"shape": "heptagon", "label": "pod", "label_plural": "pods"}
    assert wire["Namespace"] == {}
    assert wire["VolumeSnapshot"]["tag"] == "camera"
    assert (wire["TS"], wire["ID"], wire["Window"]) == ("1970-01-01T00:00:01Z", "42", 0)
    assert (wire["DNS"], wire["Plugins"], wire["Sampling"]) == ({}, [], {"Count": 0, "Total": 0})


def test_make_gives_scopes_shapes_and_labels() -> None:
    real = load(POSTS[0])
    made = report_to_json(Report.make(ts=0, report_id="1"))
    for key, *_ in TOPOLOGY_SPECS:
        expect = {k: v for k, v in real[key].items()
                  if k in ("shape", "tag", "label", "label_plural")}
        assert made[key] == expect, key


@pytest.mark.parametrize("ns, text", [
    (1796318615901235380, "2026-12-03T17:23:35.90123538Z"),
    (1796318614893965476, "2026-12-03T17:23:34.893965476Z"),
    (1 * S, "1970-01-01T00:00:01Z"),
    (1 * S + 100_000_000, "1970-01-01T00:00:01.1Z"),
    (-1, "1969-12-31T23:59:59.999999999Z"),
    (GO_ZERO_TIME_NS, "0001-01-01T00:00:00Z"),
])
def test_rfc3339nano_golden(ns: int, text: str) -> None:
    assert format_rfc3339nano(ns) == text
    assert parse_rfc3339(text) == ns


def test_rfc3339_offsets_and_garbage() -> None:
    assert parse_rfc3339("2026-12-03T19:23:35.5+02:00") == parse_rfc3339("2026-12-03T17:23:35.5Z")
    assert parse_rfc3339("2026-12-03T17:23:35.1234567891Z") == parse_rfc3339(
        "2026-12-03T17:23:35.123456789Z")
    for bad in ("", "2026-13-03T17:23:35Z", "2026-02-30T00:00:00Z", "2026-12-03 17:23:35Z",
                "2026-12-03T24:00:00Z", "yesterday", 1796318614, None, b"x"):
        with pytest.raises(RemoteProtocolError):
            parse_rfc3339(bad)
    with pytest.raises(LocalProtocolError):
        format_rfc3339nano(GO_ZERO_TIME_NS - 1)


@pytest.mark.parametrize("mutate", [
    lambda w: w.__setitem__("Window", "3s"),
    lambda w: w.__setitem__("Shortcut", 0),
    lambda w: w.__setitem__("TS", 12),
    lambda w: w["Process"].__setitem__("nodes", []),
    lambda w: w["Host"]["nodes"]["sca1-host;<host>"]["latest"]["os"].__setitem__("value", 1),
    lambda w: w["Host"]["nodes"]["sca1-host;<host>"]["latest"].__setitem__("os", "linux"),
    lambda w: w["Host"]["nodes"]["sca1-host;<host>"]["sets"].__setitem__("local_networks", [1]),
    lambda w: w["Host"]["nodes"]["sca1-host;<host>"]["metrics"]["load1"].__setitem__("max", "x"),
    lambda w: w["Host"]["nodes"]["sca1-host;<host>"]["metrics"]["load1"]["samples"][0].pop(
        "date"),
    lambda w: w["Host"].__setitem__("controls", ["host_exec"]),
    lambda w: w["Endpoint"]["nodes"].__setitem__("x", {"adjacency": "not-a-list"}),
    lambda w: w.__setitem__("Plugins", {"id": "p"}),
    lambda w: w.__setitem__("DNS", {"1.2.3.4": {"reverse": "localhost"}}),
], ids=range(13))
def test_wrong_types_are_remote_protocol_errors(mutate) -> None:
    wire = load(POSTS[0])
    mutate(wire)
    with pytest.raises(RemoteProtocolError):
        report_from_json(wire)


def test_not_a_report() -> None:
    for bad in ([], "report", 3, None):
        with pytest.raises(RemoteProtocolError):
            report_from_json(bad)


# ---------------------------------------------------------------- merge: tables

@pytest.mark.parametrize("a, b, want", [
    ({"k": (1, "old")}, {"k": (2, "new")}, {"k": (2, "new")}),         # newer wins
    ({"k": (2, "new")}, {"k": (1, "old")}, {"k": (2, "new")}),
    ({"k": (5, "a")}, {"k": (5, "b")}, {"k": (5, "b")}),               # tie: greater value
    ({"k": (1, "v")}, {"j": (1, "w")}, {"k": (1, "v"), "j": (1, "w")}),  # union
    ({}, {"j": (1, "w")}, {"j": (1, "w")}),
])
def test_latest_merge_table(a, b, want) -> None:
    assert merge_latest(a, b) == want == merge_latest(b, a)


def test_merge_shares_what_does_not_change() -> None:
    a = {"k": (2, "v")}
    assert merge_latest(a, {"k": (1, "old")}) is a
    assert merge_latest(a, {}) is a
    s = {"x": ("a", "b")}
    assert merge_sets(s, {"x": ("a",)}) is s
    assert merge_sets(s, {"x": ("c",)}) == {"x": ("a", "b", "c")}


@pytest.mark.parametrize("a, b, want", [
    (Metric([(1, 1.0)], max=100), Metric([(2, 3.0)]), Metric([(1, 1.0), (2, 3.0)], 1.0, 100)),
    (Metric([(2, 3.0)]), Metric([(1, 1.0)], max=100), Metric([(1, 1.0), (2, 3.0)], 1.0, 100)),
    (Metric([(1, 1.0), (3, 5.0)]), Metric([(2, 2.0), (3, 4.0)]),
     Metric([(1, 1.0), (2, 2.0), (3, 5.0)], 1.0, 5.0)),                # tie: greater value
    (Metric([], 0.0, 0.0), Metric([(1, -2.0)]), Metric([(1, -2.0)], -2.0, 0.0)),
])
def test_metric_merge_table(a: Metric, b: Metric, want: Metric) -> None:
    assert a.merge(b) == want == b.merge(a)


def test_node_builders_normalize() -> None:
    n = (Node("h;1", "process").with_latest("pid", 5, "1").with_set("s", ["b", "a", "b"])
         .with_adjacent("z", "y", "z").with_parent("host", "h;<host>")
         .with_metric("cpu", Metric.single(5, 1, max=100)))
    assert n.latest == {"pid": (5, "1")} and n.lookup("pid") == "1" and n.lookup("x") is None
    assert n.sets == {"s": ("a", "b")} and n.adjacency == ("y", "z")
    assert n.parents == {"host": ("h;<host>",)}
    assert n.metrics == {"cpu": Metric(((5, 1.0),), 1.0, 100.0)}
    assert n.with_set("s", ["c"]).sets == {"s": ("a", "b", "c")}
    assert n.with_latests(6, {"pid": "2", "name": "x"}).latest == {
        "pid": (6, "2"), "name": (6, "x")}
    assert n.with_child(Node("c;<container>", "container")).children[0].id == "c;<container>"


def test_add_node_merges_and_merge_does_not_touch_inputs() -> None:
    t = Topology("square")
    t.add_node(Node("p", "process").with_latest("a", 1, "x"))
    t.add_node(Node("p", "process").with_latest("b", 1, "y").with_adjacent("q"))
    assert t.nodes["p"].latest == {"a": (1, "x"), "b": (1, "y")}
    a, b = Report(process=t), Report()
    merged = a.merge(b)
    merged.process.add_node(Node("r", "process"))
    merged.process.replace_node(Node("p", "process"))
    assert set(t.nodes) == {"p"} and t.nodes["p"].adjacency == ("q",)
    assert merged.process.nodes["p"] == Node("p", "process")


@pytest.mark.parametrize("field, a, b, want", [
    ("ts", GO_ZERO_TIME_NS, 5, 5), ("ts", 7, 5, 5),        # earliest set time
    ("window", 3 * S, 2 * S, 3 * S), ("sampling", (1, 5), (2, 3), (2, 5)),
    ("shortcut", False, True, True), ("id", "1", "1", "1"), ("id", "1", "2", ""),
    ("dns", {"a": (("f",), ())}, {"a": ((), ("r",))}, {"a": (("f",), ("r",))}),
    ("plugins", ({"id": "b"},), ({"id": "a"},), ({"id": "a"}, {"id": "b"})),
])
def test_report_field_merge_table(field: str, a, b, want) -> None:
    ra, rb = Report(**{field: a}), Report(**{field: b})
    assert getattr(ra.merge(rb), field) == want == getattr(rb.merge(ra), field)


def test_topology_merge_picks_deterministically() -> None:
    a = Topology("circle", "", "host", "hosts", metadata_templates={"m": {"priority": 1.0}})
    b = Topology("", "camera", "", "", metadata_templates={"m": {"priority": 2.0}})
    for m in (a.merge(b), b.merge(a)):
        assert (m.shape, m.tag, m.label, m.label_plural) == ("circle", "camera", "host", "hosts")
        assert m.metadata_templates == {"m": {"priority": 2.0}}


# ---------------------------------------------------------------- merge: properties

@settings(max_examples=80, deadline=None)
@given(reports(), reports())
def test_merge_is_commutative(a: Report, b: Report) -> None:
    assert a.merge(b) == b.merge(a)


@settings(max_examples=60, deadline=None)
@given(reports(), reports(), reports())
def test_merge_is_associative(a: Report, b: Report, c: Report) -> None:
    assert a.merge(b).merge(c) == a.merge(b.merge(c)) == merge_reports([a, b, c])


@settings(max_examples=80, deadline=None)
@given(reports(), reports())
def test_merge_is_idempotent(a: Report, b: Report) -> None:
    assert a.merge(a) == a
    ab = a.merge(b)
    assert ab.merge(b) == ab == ab.merge(a)


def test_real_samples_merge_as_a_join() -> None:
    r1, r2, r3, r4 = (sample(n) for n in (1, 2, 3, 4))
    assert r1.merge(r1) == r1
    assert r1.merge(r4) == r4.merge(r1)
    assert r1.merge(r2).merge(r3) == r1.merge(r2.merge(r3)) == merge_reports([r3, r2, r1])
    merged = merge_reports([r1, r2, r3, r4])
    assert merged.id == "" and merged.ts == r1.ts and merged.window == max(
        r.window for r in (r1, r2, r3, r4))
    # metric samples of the four 3-second reports line up into one series
    host = merged.host.nodes["sca1-host;<host>"]
    series = host.metrics["host_cpu_usage_percent"].samples
    assert len(series) == sum(len(r.host.nodes["sca1-host;<host>"].metrics[
        "host_cpu_usage_percent"].samples) for r in (r1, r2, r3, r4))
    assert [t for t, _ in series] == sorted(t for t, _ in series)
    assert host.id == "sca1-host;<host>" and host.topology == "host"  # deltas have ""


# ---------------------------------------------------------------- un-merge (deltas)

@settings(max_examples=120, deadline=None)
@given(reports(), reports())
def test_delta_merged_into_previous_gives_the_full_merge(prev: Report, x: Report) -> None:
    delta = x.unmerge(prev)
    assert prev.merge(delta) == prev.merge(x)
    assert x.merge(delta) == x


@settings(max_examples=60, deadline=None)
@given(reports())
def test_delta_against_itself_keeps_only_metrics(x: Report) -> None:
    delta = x.unmerge(x)
    for _name, topology in delta.topologies():
        assert (topology.shape, topology.tag, topology.label) == ("", "", "")
        assert not topology.metadata_templates and not topology.table_templates
        for node in topology.nodes.values():
            assert node.metrics or node.children
            assert not (node.id or node.topology or node.latest or node.sets or node.parents
                        or node.adjacency)


def test_node_unmerge_table() -> None:
    prev = Node("p", "process", latest={"pid": (1, "5")}, sets={"s": ["a"]},
                adjacency=["q"], parents={"host": ["h"]})
    assert prev.unmerge(prev) is None
    changed = prev.with_latest("name", 2, "sh")
    delta = changed.unmerge(prev)
    assert delta == Node("", "", latest=changed.latest)   # latest kept whole
    assert Node("other", "process").unmerge(prev) == Node("other", "process")
    with_metric = prev.with_metric("cpu", Metric.single(3, 1.0))
    assert with_metric.unmerge(prev) == Node("", "", metrics=with_metric.metrics)


def test_real_samples_delta_identities() -> None:
    r1, r2, r3, r4 = (sample(n) for n in (1, 2, 3, 4))
    for prev, x in ((r1, r4), (r4, r1), (r1, r1.merge(r2)), (r1.merge(r2), r1.merge(r3)),
                    (r1, r4.merge(r3))):
        delta = x.unmerge(prev)
        assert prev.merge(delta) == prev.merge(x)
        assert x.merge(delta) == x
        assert delta.node_count() <= x.node_count()


def test_our_delta_has_the_shape_of_scopes() -> None:
    """004 un-merged against 001 leaves, topology by topology, the keys Scope's own delta
    002 has: Process only `nodes`, Host `nodes` and `controls`, empty topologies `{}`.
    Process nodes of 002 whose latest is unchanged carry only sets/metrics/parents."""
    ours = report_to_json(sample(4).unmerge(sample(1)))
    scopes = load(POSTS[1])
    for key, *_ in TOPOLOGY_SPECS:
        assert set(ours[key]) == set(scopes[key]), key
    r1, r2 = sample(1), sample(2)
    for key, node in r2.process.nodes.items():
        if not node.id:
            assert key in r1.process.nodes and not node.sets and not node.parents
            assert not node.latest or node.latest != r1.process.nodes[key].latest


def test_report_topology_lookup() -> None:
    r = Report.make(ts=0, report_id="1")
    assert r.topology("Process") is r.topology("process") is r.process
    assert [name for name, _ in r.topologies()] == list(TOPOLOGY_NAMES)
    assert len(TOPOLOGY_NAMES) + 7 == len(load(POSTS[0])) == 30
    with pytest.raises(LocalProtocolError):
        r.topology("nope")
    with pytest.raises(LocalProtocolError):
        Report(nope=Topology())


# ---------------------------------------------------------------- ids

def test_ids_of_the_samples_parse() -> None:
    r = sample(4)
    for node_id in r.endpoint.nodes:
        scope, address, port = ids.parse_endpoint_node_id(node_id)
        assert port.isdigit() and ids.node_id_type(node_id) in ("endpoint", None)
        netns = scope.removeprefix("sca1-host-") if scope.startswith("sca1-host-") else ""
        expect = "sca1-host" + (f"-{netns}" if netns else "") if ids.is_loopback(address) else ""
        assert scope == ids.address_scope("sca1-host", netns, address) == expect
        assert ids.make_endpoint_node_id("sca1-host", netns, address, port) == node_id
    for node_id, node in r.process.nodes.items():
        assert ids.parse_process_node_id(node_id) == ("sca1-host", node.lookup("pid"))
        assert ids.node_id_type(node_id) == "endpoint"  # Scope's NodeIDType: digits
    assert ids.parse_host_node_id("sca1-host;<host>") == "sca1-host"
    assert ids.make_host_node_id("sca1-host") in r.host.nodes


@pytest.mark.parametrize("make, args, node_id", [
    (ids.make_host_node_id, ("h1",), "h1;<host>"),
    (ids.make_container_node_id, ("abc",), "abc;<container>"),
    (ids.make_container_image_node_id, ("img",), "img;<container_image>"),
    (ids.make_process_node_id, ("h1", 42), "h1;42"),
    (ids.make_endpoint_node_id, ("h1", "", "10.0.0.1", 80), ";10.0.0.1;80"),
    (ids.make_endpoint_node_id, ("h1", "", "127.0.0.1", 80), "h1;127.0.0.1;80"),
    (ids.make_endpoint_node_id, ("h1", "4026531840", "127.0.0.1", 80),
     "h1-4026531840;127.0.0.1;80"),
    (ids.make_endpoint_node_id, ("h1", "", "::1", 80), "h1;::1;80"),
    (ids.make_endpoint_node_id, ("h1", "", "::ffff:127.0.0.1", 80), "h1;::ffff:127.0.0.1;80"),
    (ids.make_scoped_endpoint_node_id, ("s", "1.2.3.4", "5"), "s;1.2.3.4;5"),
    (ids.make_address_node_id, ("h1", "10.0.0.1"), ";10.0.0.1"),
    (ids.make_overlay_node_id, ("ce:31:e0:06:45:1a",), "#ce:31:e0:06:45:1a"),
    (ids.make_overlay_node_id, ("n", ids.DOCKER_OVERLAY_PEER_PREFIX), "#docker_peer_n"),
    (ids.make_ecs_service_node_id, ("c", "svc"), "c;svc"),
])
def test_id_makers(make, args, node_id: str) -> None:
    assert make(*args) == node_id


def test_local_networks_scope_addresses() -> None:
    import ipaddress
    nets = [ipaddress.ip_network("10.32.0.0/12")]
    assert ids.make_endpoint_node_id("h1", "", "10.32.0.5", 80, nets) == "h1;10.32.0.5;80"
    assert ids.make_endpoint_node_id("h1", "", "10.0.0.5", 80, nets) == ";10.0.0.5;80"
    assert ids.make_address_node_id("h1", "10.32.0.5", nets) == "h1;10.32.0.5"


@pytest.mark.parametrize("parse, node_id, want", [
    (ids.parse_endpoint_node_id, ";10.0.0.1;80", ("", "10.0.0.1", "80")),
    (ids.parse_endpoint_node_id, "h;::1;80", ("h", "::1", "80")),
    (ids.parse_endpoint_node_id, "h;a;b;80", ("h", "a", "b;80")),  # first two ';', as Scope
    (ids.parse_endpoint_node_id, "h;127.0.0.1", None),
    (ids.parse_endpoint_node_id, "noscope", None),
    (ids.parse_process_node_id, "h;42", ("h", "42")),
    (ids.parse_process_node_id, "h42", None),
    (ids.parse_host_node_id, "h;<container>", None),
    (ids.parse_container_node_id, "abc;<container>", "abc"),
    (ids.parse_container_image_node_id, "img;<container_image>", "img"),
    (ids.parse_overlay_node_id, "#ce:31", ("", "ce:31")),
    (ids.parse_overlay_node_id, "#docker_peer_x", ("docker_peer_", "x")),
    (ids.parse_overlay_node_id, "ce:31", None),
    (ids.parse_ecs_service_node_id, "svc;<ecs_service>", ("unknown", "svc")),
    (ids.parse_ecs_service_node_id, "c;svc", ("c", "svc")),
    (ids.parse_address_node_id, ";10.0.0.1", ("", "10.0.0.1")),
    (ids.node_id_type, "h;<host>", "host"),
    (ids.node_id_type, ";10.0.0.1;80", "endpoint"),
    (ids.node_id_type, "h;x", None),
    (ids.node_id_type, "h;127.0.0.1;80", "endpoint"),
    (ids.node_id_type, "nodelim", None),
])
def test_id_parsers(parse, node_id: str, want) -> None:
    assert parse(node_id) == want


def test_single_component_tags_follow_scope() -> None:
    assert ids.make_single_component_id("daemon_set", "d") == "d;<daemonset>"
    assert ids.parse_single_component_id("stateful_set", "s;<statefulset>") == "s"
    assert ids.parse_single_component_id("pod", "s;<statefulset>") is None
