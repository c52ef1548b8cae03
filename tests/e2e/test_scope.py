"""Weave Scope end to end on the testbed: every host runs the probe and the app; each
host's app, asked over Scope's HTTP API inside the host's namespace, shows the whole
testbed from the probes' reports (local bus, and the mesh for the others). Checked: the
hosts, the attached containers and the weave peers with each link's overlay within 10 s
(of the last `weave attach`: the stacks are launched, then the containers attached);
an iperf3 between containers on two hosts as an edge (containers and processes views)
within 5 s; a connection a NetworkPolicy blocks, shown as blocked; a probe killed on h2
takes h2 out of the apps once the window has passed, and its restart brings it back.
Also: `weave launch --no-scope` runs the stack without them."""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from tests.e2e.procs import wait_until

WINDOW_S = 15.0  # the app's report window (shared.config.ScopeAppSettings)
POLICY = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web-from-db, namespace: default}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
    - from: [{podSelector: {matchLabels: {app: db}}}]
"""


def api(tb, host: str, path: str):
    """GET http://127.0.0.1:4040<path> inside `host`'s namespace (None if no answer)."""
    out = tb.exec(host, ["curl", "-sf", "--max-time", "3", f"http://127.0.0.1:4040{path}"], timeout=10)
    return json.loads(out.stdout) if out.returncode == 0 and out.stdout else None


def nodes(tb, host: str, topology: str) -> dict:
    got = api(tb, host, f"/api/topology/{topology}")
    return got["nodes"] if got else {}


def attach(tb, host: str, k: int, label: str, name: str) -> str:
    """Container k of `host`, attached with a label and a weaveDNS name; its address."""
    h = tb.host(host)
    ns = f"{h.ns}c{k}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
    h.containers.append(ns)
    out = tb.weave(h, "attach", "--label", label, "--name", name, ns, check=False)
    assert out.returncode == 0, out.stderr
    return tb.weave(h, "ps", ns).stdout.split()[2].split("/")[0]


def link_overlays(tb, host: str) -> dict[str, str]:
    """Remote peer name -> the overlay of our link to it, from `weave report`."""
    router = json.loads(tb.weave(host, "report").stdout)["Router"]
    by_addr = {c["Address"]: c["Name"] for p in router["Peers"] if p["Name"] == router["Name"]
               for c in p["Connections"]}
    return {by_addr[c["Address"]]: c["Attrs"]["name"] for c in router["Connections"]
            if c.get("Attrs", {}).get("name") and c["Address"] in by_addr}


def whole_testbed_shown(tb, containers: list[str]):
    """Every host's app lists the 3 hosts, every container, and the 3 peers whose links
    carry the overlay each host's router reports. The last failure, or None."""
    overlays = {tb.host(h).name: link_overlays(tb, h) for h in ("h1", "h2", "h3")}
    for host in ("h1", "h2", "h3"):
        hosts = {n["label"] for n in nodes(tb, host, "hosts").values()}
        if hosts != {"h1", "h2", "h3"}:
            return f"{host}: hosts {sorted(hosts)}"
        conts = set(nodes(tb, host, "containers"))
        if not {f"{c};<container>" for c in containers} <= conts:
            return f"{host}: containers {sorted(conts)}"
        peers = nodes(tb, host, "weave")
        for name, links in overlays.items():
            shown = {link["peerName"]: link["overlay"] for link in peers.get(f"#{name}", {}).get("weave_py_links", [])}
            if len(links) != 2 or shown != links:
                return f"{host}: links of {name} shown {shown}, router says {links}"
    return None


def metric(tb, host: str, name: str) -> float:
    text = tb.exec(host, ["curl", "-sf", "http://127.0.0.1:6793/metrics"]).stdout
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else -1.0


def test_scope_shows_the_testbed_flows_blocks_and_probe_loss(testbed_factory, tmp_path):
    tb = testbed_factory()
    tb.up(3, profile="test")
    launched = time.monotonic()
    ips = {"h1c1": attach(tb, "h1", 1, "app=client", "client.weave.local"),
           "h2c1": attach(tb, "h2", 1, "app=iperf", "iperf.weave.local"),
           "h3c1": attach(tb, "h3", 1, "app=web", "web.weave.local")}
    containers = [f"{tb.prefix}-{c}" for c in ips]
    started = time.monotonic()
    missing = "not asked yet"
    while missing and time.monotonic() - started < 10.0:
        missing = whole_testbed_shown(tb, containers)
    took = time.monotonic() - started
    assert missing is None, f"after {took:.1f} s: {missing}"
    print(f"testbed shown in every app {took:.1f} s after the containers were attached, "
          f"{time.monotonic() - launched:.1f} s after the stacks were launched")
    c1 = nodes(tb, "h2", "containers")[f"{tb.prefix}-h1c1;<container>"]
    meta = {m["id"]: m["value"] for m in c1["metadata"]}
    assert meta["weave_dns_hostname"] == "client.weave.local" and meta["docker_container_ips"] == ips["h1c1"]

    # iperf3 between h1c1 and h2c1: an edge in the containers and processes views
    server = subprocess.Popen(["ip", "netns", "exec", f"{tb.prefix}-h2c1", "iperf3", "-s", "-1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = None
    try:
        wait_until(lambda: "5201" in tb.exec("h2c1", ["ss", "-ltn"]).stdout, what="iperf3 listening")
        client = subprocess.Popen(["ip", "netns", "exec", f"{tb.prefix}-h1c1", "iperf3", "-c", ips["h2c1"], "-t", "30",
                                   "-b", "10M"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        flow_started = time.monotonic()
        src, dst = f"{tb.prefix}-h1c1;<container>", f"{tb.prefix}-h2c1;<container>"

        def edge():
            conts = nodes(tb, "h1", "containers")
            if dst not in conts.get(src, {}).get("adjacency", []):
                return None
            procs = nodes(tb, "h1", "processes")
            servers = {i for i, n in procs.items() if i.startswith("h2;") and n["label"] == "iperf3"}
            clients = [n for i, n in procs.items() if i.startswith("h1;") and n["label"] == "iperf3"]
            return clients and servers & set(clients[0].get("adjacency", []))

        wait_until(edge, timeout=15, what="the iperf3 edge")
        took = time.monotonic() - flow_started
        assert took <= 5.0, f"the iperf3 edge took {took:.1f} s"
        print(f"iperf3 edge shown {took:.1f} s after the client started")
    finally:
        for p in (client, server):
            if p is not None:
                p.kill()
                p.wait()

    # a connection the policy blocks (h1c1 -> web on h3, dropped by h3's npc) is shown blocked
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    assert tb.weave("h1", "policy", "apply", str(policy)).returncode == 0
    attempt = f"import socket\ntry: socket.create_connection(('{ips['h3c1']}', 80), timeout=1)\nexcept OSError: pass"
    web, client_c = f"{tb.prefix}-h3c1;<container>", f"{tb.prefix}-h1c1;<container>"

    def shown_blocked():
        tb.exec("h1c1", ["python3", "-c", attempt], timeout=10)
        conts = nodes(tb, "h2", "containers")
        return web in conts.get(client_c, {}).get("weave_py_blocked", [])

    wait_until(shown_blocked, timeout=30, every=1.0, what="the blocked attempt in h2's app")
    h3 = nodes(tb, "h1", "weave")[f"#{tb.host('h3').name}"]
    assert int({m["id"]: m["value"] for m in h3["metadata"]}["weave_py_blocked_count"]) >= 1

    # figures: report sizes and what the reports cost on the mesh, per host
    for host in ("h1", "h2", "h3"):
        print(f"{host}: last report {metric(tb, host, 'scope_probe_report_bytes'):.0f} B, "
              f"mesh {metric(tb, host, 'scope_probe_mesh_bytes_per_second'):.0f} B/s")

    # h2's probe killed (its supervisor held, so it is not restarted): h2 leaves the apps
    # once its last report is out of the window; let the supervisor go: it restarts the
    # probe, and h2 is back
    state = Path(tb.host("h2").state_dir) / "processes.json"
    supervisor = json.loads(state.read_text())["supervisor"]
    os.kill(supervisor, signal.SIGSTOP)
    try:
        killed_at = time.monotonic()
        tb.kill_service("h2", "scope-probe")
        hosts = lambda h: {n["label"] for n in nodes(tb, h, "hosts").values()}  # noqa: E731
        wait_until(lambda: hosts("h1") == {"h1", "h3"} and hosts("h3") == {"h1", "h3"}, timeout=WINDOW_S + 15,
                   what="h2 gone from h1's and h3's apps")
        gone = time.monotonic() - killed_at
        assert gone >= WINDOW_S - 4.0, f"h2 left after {gone:.1f} s, before its reports aged out of the window"
    finally:
        os.kill(supervisor, signal.SIGCONT)
    wait_until(lambda: hosts("h1") == {"h1", "h2", "h3"} and hosts("h3") == {"h1", "h2", "h3"}, timeout=20,
               what="h2 back once its probe was restarted")


def test_launch_without_scope_runs_the_previous_stack(netns):
    out = netns.weave("launch", "--name", "aa:00:00:00:00:43", "--nickname", "noscope", "--no-scope")
    assert out.returncode == 0, out.stderr
    rows = netns.weave("ps-services").stdout.splitlines()[2:]
    assert sorted(line.split()[0] for line in rows) == sorted(["nats", "gossip", "ipam", "dns", "datapath", "npc"])
    assert netns.run("curl", "-s", "--max-time", "2", "http://127.0.0.1:4040/api").returncode != 0
