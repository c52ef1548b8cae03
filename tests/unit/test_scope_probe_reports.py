"""The probe's reporters: ids, keys, sets, metrics, parents and templates compared with
what the real Scope 1.13 probe wrote (tests/fixtures/scope-1.13/probe-post/report-004)
and, for the weave reporter, fed a real Weave Net 2.8 /report."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.scope.codec import decode_report, encode_report
from services.scope.probe import procfs, templates as t
from services.scope.probe.conntrack import Flow, Tuple
from services.scope.probe.container import ContainerReporter, container_namespaces, dns_names
from services.scope.probe.endpoint import EndpointReporter
from services.scope.probe.host import HostFacts, HostReporter
from services.scope.probe.overlay import OverlayReporter, ipam_status
from services.scope.probe.process import ProcessReporter
from services.scope.probe.procnet import Connection
from services.scope.probe.walker import NamespaceSockets, ProcessSample
from services.scope.report import report_from_json
from shared.schemas.datapath import ContainerEvent
from shared.schemas.npc import BlockedFlow

FIXTURES = Path(__file__).parent.parent / "fixtures"
SCOPE = report_from_json(json.loads((FIXTURES / "scope-1.13/probe-post/report-004.json").read_text()))
WEAVE = json.loads((FIXTURES / "weave-2.8/samples/report-h1-encrypted.json").read_text())
NOW = 1_796_318_624_895_381_312
HOST_NETNS, C1_NETNS = 4026531992, 4026532662
FACTS = HostFacts(kernel="6.1.0 #1 SMP", uptime_s=755, load1=3.0, cpu=procfs.CpuTimes(1000, 800, 2),
                  mem_used=731586560, mem_total=25276071936, local_networks=("10.77.0.1/24", "127.0.0.1/8"))


def sample(pid: int, ppid: int = 1, netns: int = HOST_NETNS, jiffies: int = 0, name: str = "/usr/bin/python3",
           cmdline: str = "/usr/bin/python3 -m http.server ") -> ProcessSample:
    return ProcessSample(pid, ppid, name, cmdline, 1, jiffies, 3063808, 2**64 - 1, 6, 20000, netns, 1000 + pid)


C1 = ContainerEvent(kind="attached", container_id="wt-h1c1", cidrs=("10.32.0.5/12",), mac="6a:11:22:33:44:55",
                    fqdn="web.weave.local.", labels={"app": "web"}, netns_inode=C1_NETNS)
EXPOSE = ContainerEvent(kind="attached", container_id="weave:expose", cidrs=("10.32.0.1/12",))


def test_host_node_as_scope_writes_it():
    topo = HostReporter("sca1-host", "100f401f58172167", "weave-py-0.1.0", controls=True).report(FACTS, NOW)
    want = SCOPE.host
    assert (topo.metadata_templates, topo.metric_templates) == (want.metadata_templates, want.metric_templates)
    assert topo.controls.items() >= want.controls.items()  # Scope's host_exec, and ours
    node, ref = topo.nodes["sca1-host;<host>"], want.nodes["sca1-host;<host>"]
    assert node.latest.keys() == ref.latest.keys()
    assert node.sets.keys() == ref.sets.keys() and node.metrics.keys() == ref.metrics.keys()
    assert node.parents == ref.parents == {"host": ("sca1-host;<host>",)}
    assert node.lookup("host_name") == "sca1-host" and node.lookup("uptime") == "755"
    assert node.lookup("control_probe_id") == "100f401f58172167"
    assert node.sets["local_networks"] == ("10.77.0.1/24", "127.0.0.1/8")
    assert node.metrics["host_cpu_usage_percent"].samples == ((NOW, 20.0),)  # 200 busy of 1000 ticks
    assert node.metrics["host_cpu_usage_percent"].max == 100.0
    assert node.metrics["host_mem_usage_bytes"].max == float(FACTS.mem_total)


def test_process_nodes_as_scope_writes_them_and_cpu_from_the_previous_spy():
    rep = ProcessReporter("sca1-host")
    cpu0, cpu1 = procfs.CpuTimes(1000, 800, 2), procfs.CpuTimes(1200, 900, 2)
    first = rep.report([sample(4, jiffies=10), sample(1, ppid=0, name="/bin/bash", cmdline="")], cpu0, {}, NOW)
    want = SCOPE.process
    assert (first.metadata_templates, first.metric_templates) == (want.metadata_templates, want.metric_templates)
    assert "process_cpu_usage_percent" not in first.nodes["sca1-host;4"].metrics, "no previous spy yet"
    second = rep.report([sample(4, jiffies=60)], cpu1, {}, NOW + 10**9)
    node, ref = second.nodes["sca1-host;4"], want.nodes["sca1-host;4"]
    assert node.latest.keys() == ref.latest.keys()  # pid, ppid, name, cmdline, threads, host_node_id
    assert node.metrics.keys() == ref.metrics.keys() and node.parents == ref.parents
    assert node.metrics["process_cpu_usage_percent"].samples == ((NOW + 10**9, 50.0),)  # 50 of 200 ticks, 2 CPUs
    assert node.metrics["process_cpu_usage_percent"].max == 200.0
    assert node.metrics["process_memory_usage_bytes"].max == float(2**64 - 1)
    assert node.metrics["open_files_count"].max == 20000.0
    init = first.nodes["sca1-host;1"]
    assert "ppid" not in init.latest and "cmdline" not in init.latest  # as pid 1 in the fixture: ppid 0
    assert rep.cpu_pct == {4: 50.0}


def test_container_nodes_and_their_processes():
    events = [C1, EXPOSE]
    netns = container_namespaces(events)
    assert netns == {C1_NETNS: "wt-h1c1"}, "weave:expose is the host, not a container"
    procs = [sample(40, netns=C1_NETNS), sample(41, ppid=40, netns=C1_NETNS), sample(4)]
    ptopo = ProcessReporter("h1").report(procs, procfs.CpuTimes(1000, 800, 2), netns, NOW)
    p40 = ptopo.nodes["h1;40"]
    assert p40.parents == {"host": ("h1;<host>",), "container": ("wt-h1c1;<container>",)}
    assert p40.lookup("docker_container_id") == "wt-h1c1"
    assert ptopo.nodes["h1;4"].parents == {"host": ("h1;<host>",)}

    topo = ContainerReporter("h1", "probe1").report(events, procs, {40: 12.5, 41: 2.5}, 2, 8 << 30, NOW)
    assert list(topo.nodes) == ["wt-h1c1;<container>"]
    node = topo.nodes["wt-h1c1;<container>"]
    assert {k: node.lookup(k) for k in ("docker_container_id", "docker_container_name", "docker_container_state",
                                        "weave_mac_address", "weave_dns_hostname", "docker_label_app",
                                        "host_node_id")} == {
        "docker_container_id": "wt-h1c1", "docker_container_name": "wt-h1c1", "docker_container_state": "running",
        "weave_mac_address": "6a:11:22:33:44:55", "weave_dns_hostname": "web.weave.local",
        "docker_label_app": "web", "host_node_id": "h1;<host>"}
    assert node.sets == {"docker_container_ips": ("10.32.0.5",), "docker_container_ips_with_scopes": (";10.32.0.5",),
                         "docker_container_networks": ("weave",)}
    assert node.metrics["docker_cpu_total_usage"].samples == ((NOW, 15.0),)
    assert node.metrics["docker_memory_usage"].samples == ((NOW, 2 * 3063808.0),)
    for key, template in SCOPE.container.metadata_templates.items():  # the weave reporter's two
        assert topo.metadata_templates[key] == template
    assert dns_names(events) == {"10.32.0.5": ("web.weave.local",)}


def test_endpoints_as_the_fixture_shows_them():
    """The fixture's echo server (pid 5, :9000) and client (pid 93) over 10.77.0.1, over
    loopback in namespace 4026532662 (pid 92), and an HTTP fetch only conntrack saw."""
    ns = NamespaceSockets(C1_NETNS, [
        Connection("10.77.0.1", 9000, "10.77.0.1", 46302, 1, 101),  # the server's socket
        Connection("10.77.0.1", 46302, "10.77.0.1", 9000, 1, 102),  # the client's
        Connection("127.0.0.1", 49930, "127.0.0.1", 9000, 1, 103),
        Connection("127.0.0.1", 9000, "127.0.0.1", 49930, 1, 104),
    ], owners={101: 5, 102: 93, 103: 92, 104: 5})
    flow = Flow(7, 6, Tuple("127.0.0.1", "127.0.0.1", 39902, 8000), Tuple("127.0.0.1", "127.0.0.1", 8000, 39902), 3, 14)
    topo, dns = EndpointReporter("sca1-host").report([ns], [flow], [], {}, NOW)
    ref = SCOPE.endpoint.nodes
    for node_id in (";10.77.0.1;46302", ";10.77.0.1;9000", "sca1-host-4026532662;127.0.0.1;49930",
                    "sca1-host-4026532662;127.0.0.1;9000", "sca1-host;127.0.0.1;39902"):
        mine = topo.nodes[node_id]
        assert mine.adjacency == ref[node_id].adjacency, node_id
        assert mine.lookup("pid") == ref[node_id].lookup("pid"), node_id
        assert mine.lookup("host_node_id") == ref[node_id].lookup("host_node_id"), node_id
    assert topo.nodes[";10.77.0.1;9000"].adjacency == ()
    assert set(dns) == {"10.77.0.1", "127.0.0.1"}


def test_conntrack_direction_wins_over_the_port_guess():
    # a client on port 80 talking to a server on 40000: the port guess would flip it
    ns = NamespaceSockets(HOST_NETNS, [Connection("10.32.0.2", 80, "10.40.0.1", 40000, 1, 9)], owners={9: 77})
    flow = Flow(1, 6, Tuple("10.32.0.2", "10.40.0.1", 80, 40000), Tuple("10.40.0.1", "10.32.0.2", 40000, 80), 3, 14)
    guessed, _ = EndpointReporter("h1").report([ns], [], [], {}, NOW)
    assert guessed.nodes[";10.40.0.1;40000"].adjacency == (";10.32.0.2;80",)
    assert guessed.nodes[";10.32.0.2;80"].lookup("pid") == "77"
    known, _ = EndpointReporter("h1").report([ns], [flow], [], {}, NOW)
    assert known.nodes[";10.32.0.2;80"].adjacency == (";10.40.0.1;40000",)
    assert known.nodes[";10.32.0.2;80"].lookup("pid") == "77"


def test_blocked_flows_are_edges_marked_blocked():
    b = BlockedFlow(protocol="tcp", src="10.32.0.5", sport=40000, dst="10.40.0.1", dport=80, at_unix=1.0)
    topo, dns = EndpointReporter("h2").report([], [], [b], {"10.32.0.5": ("web.weave.local",)}, NOW)
    src = topo.nodes[";10.32.0.5;40000"]
    assert src.adjacency == (";10.40.0.1;80",)
    assert src.lookup("weave_py_blocked") == "true" and src.sets == {"weave_py_blocked_to": (";10.40.0.1;80",)}
    assert ";10.40.0.1;80" in topo.nodes
    assert dns["10.32.0.5"] == ((), ("web.weave.local",))


def test_overlay_from_a_real_weave_report():
    status = json.loads(json.dumps(WEAVE))
    status["Router"]["Connections"][0]["Attrs"]["name"] = "weave-py-vxlan"
    status["Router"]["Connections"][0]["Attrs"]["encrypted"] = False
    blocked = [BlockedFlow(protocol="tcp", src="10.32.0.5", sport=40000, dst="10.40.0.1", dport=80, at_unix=0.0,
                           count=3)]
    topo = OverlayReporter("h1").report(status, blocked, NOW)
    for key, template in SCOPE.overlay.metadata_templates.items():
        assert topo.metadata_templates[key] == template
    for key, template in SCOPE.overlay.table_templates.items():
        assert topo.table_templates[key] == template
    assert set(topo.nodes) == {"#aa:00:00:00:00:01", "#aa:00:00:00:00:02", "#aa:00:00:00:00:03"}
    me = topo.nodes["#aa:00:00:00:00:01"]
    assert me.adjacency == ("#aa:00:00:00:00:03",), "edges along outbound connections"
    assert {k: me.lookup(k) for k in ("weave_peer_name", "weave_peer_nick_name", "weave_encryption",
                                      "weave_protocol", "weave_peer_count", "weave_connection_count",
                                      "weave_ipam_status", "weave_ipam_range", "host_node_id")} == {
        "weave_peer_name": "aa:00:00:00:00:01", "weave_peer_nick_name": "h1", "weave_encryption": "enabled",
        "weave_protocol": "1..2", "weave_peer_count": "3", "weave_connection_count": "2",
        "weave_ipam_status": "ready", "weave_ipam_range": "10.32.0.0/12", "host_node_id": "h1;<host>"}
    assert me.parents == {"host": ("h1;<host>",)}
    assert me.sets["local_networks"] == ("10.32.0.0/12",)
    assert me.lookup("weave_connections_multicolumn_table_192.168.77.3:6783___weave_connection_info") == \
        "encrypted   sleeve aa:00:00:00:00:03(h3)"
    links = t.LINKS_PREFIX
    assert me.lookup(f"{links}aa:00:00:00:00:03___weave_py_link_overlay") == "weave-py-vxlan"
    assert me.lookup(f"{links}aa:00:00:00:00:03___weave_py_link_encrypted") == "false"
    assert me.lookup(f"{links}aa:00:00:00:00:02___weave_py_link_overlay") == "sleeve"
    assert me.lookup(f"{links}aa:00:00:00:00:02___weave_py_link_mtu") == "1414"
    assert me.lookup(f"{links}aa:00:00:00:00:02___weave_py_link_peer") == "aa:00:00:00:00:02(h2)"
    assert me.lookup("weave_py_overlay_to_aa:00:00:00:00:03") == "weave-py-vxlan"
    assert me.lookup("weave_py_blocked_count") == "1"
    row = "weave_py_blocked_table_tcp 10.32.0.5:40000 -> 10.40.0.1:80___"
    assert me.lookup(row + "weave_py_blocked_count") == "3"
    other = topo.nodes["#aa:00:00:00:00:03"]
    assert other.lookup("weave_peer_nick_name") == "h3" and "host" not in other.parents


def test_overlay_without_a_router_has_templates_only():
    topo = OverlayReporter("h1").report(None, [], NOW)
    assert not topo.nodes and topo.table_templates


@pytest.mark.parametrize("ipam, status", [
    ({"Entries": [{"Size": 4, "IsKnownPeer": True}]}, "ready"),
    ({"Entries": [{"Size": 4, "IsKnownPeer": True}], "PendingAllocates": ["x"]}, "waiting for grant"),
    ({"Entries": [{"Size": 4, "IsKnownPeer": False}]}, "all ranges owned by unreachable peers"),
    ({"Paxos": {"Elector": True, "Quorum": 2, "KnownNodes": 1}}, "awaiting consensus (quorum: 2, known: 1)"),
    ({"Paxos": {"Elector": False}}, "priming"),
    ({}, "idle"),
])
def test_ipam_status_as_scope(ipam, status):
    assert ipam_status(ipam) == status


def test_a_report_survives_the_wire():
    from services.scope.probe.probe import Probe, SpyInputs
    probe = Probe("h1", "probe1", "weave-py-0.1.0")
    procs = [sample(40, netns=C1_NETNS), sample(4)]
    ns = NamespaceSockets(C1_NETNS, [Connection("10.32.0.5", 40000, "10.40.0.1", 5201, 1, 5)], {5: 40})
    probe.spy(SpyInputs(host=FACTS, processes=procs, sockets=[ns], containers=[C1], weave_status=WEAVE), NOW)
    pub = probe.publish(NOW + 1)
    decoded = decode_report(encode_report(pub.report), "application/msgpack", "gzip")
    assert decoded == pub.report
    assert decoded.endpoint.nodes[";10.32.0.5;40000"].lookup("pid") == "40"
    assert decoded.dns["10.32.0.5"] == ((), ("web.weave.local",))
