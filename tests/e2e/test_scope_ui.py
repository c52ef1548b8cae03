"""The Scope page in a real browser (Debian's chromium, headless, driven by Playwright)
against a 3-host testbed, one testbed and one browser for the whole module:

- h1: `--scope-controls --scope-token` (its app on 127.0.0.1:4040 of h1);
- h2: `--scope-token`, its app on h2's underlay address 192.168.77.2:4040, controls off;
- h3: the defaults (loopback, no token, no controls).
The browser runs inside h1's network namespace (a wrapper execs chromium through
`ip netns exec`), so it reaches h1's loopback app and h2's app on the underlay.

Checked: without the token the page shows a login prompt and every API call is 401
with a body that says nothing; logged in, the page loads with no console errors; the
graph's nodes are the API's, per topology and grouping; search narrows the graph; a
click on a node opens its details, a parent link moves to it; the Weave Net view shows
every link with its overlay; live diffs add a container without laying the graph out
again; the table and resources views; with controls on, a terminal runs `ip addr` in a
container and shows its weave address, the container's traces list its `weave attach`,
detach runs through the app; with controls off, no control is offered and the API
refuses them; a restarted app is shown as lost and the page reconnects. Screenshots of
each view go to $WEAVE_TEST_ARTIFACTS/scope-ui (default .artifacts/scope-ui, ignored by
git); the path is printed.
"""
from __future__ import annotations

import json
import os
import secrets
import stat
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from playwright.sync_api import Page, sync_playwright

from tests.e2e.procs import wait_until
from weavectl.testbed import Testbed

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("WEAVE_TEST_ARTIFACTS", REPO / ".artifacts")) / "scope-ui"
CHROMIUM = next((p for p in ("/usr/lib/chromium/chromium", "/usr/bin/chromium") if os.path.exists(p)), "chromium")
T1, T2 = secrets.token_hex(12), secrets.token_hex(12)
H1_URL, H2_URL, H3_URL = "http://127.0.0.1:4040", "http://192.168.77.2:4040", "http://192.168.77.3:4040"
VIEWPORT = {"width": 1280, "height": 760}


# -- the testbed ----------------------------------------------------------------------
def api(tb: Testbed, host: str, path: str, token: str | None = None, base: str = "http://127.0.0.1:4040"):
    """GET <base><path> inside `host`'s namespace with the token (None if no answer)."""
    auth = ["-H", f"Authorization: Bearer {token}"] if token else []
    out = tb.exec(host, ["curl", "-sf", "--max-time", "3", *auth, f"{base}{path}"], timeout=10)
    return json.loads(out.stdout) if out.returncode == 0 and out.stdout else None


def attach(tb: Testbed, host: str, k: int, name: str, label: str = "") -> str:
    """Container k of `host`, attached with a weaveDNS name (and a label); its address."""
    h = tb.host(host)
    ns = f"{h.ns}c{k}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
    h.containers.append(ns)
    out = tb.weave(h, "attach", "--name", name, *(("--label", label) if label else ()), ns, check=False)
    assert out.returncode == 0, out.stderr
    return tb.weave(h, "ps", ns).stdout.split()[2].split("/")[0]


POLICY = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-client, namespace: default}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
    - from: [{podSelector: {matchLabels: {app: client}}}]
"""
SERVE = "import socket,time\ns=socket.socket()\ns.bind(('0.0.0.0',5432))\ns.listen(8)\nc=[]\nwhile 1: c.append(s.accept())"
HOLD = ("import socket,time\nwhile 1:\n try: s=socket.create_connection(('{ip}',5432),timeout=2); break\n"
        " except OSError: time.sleep(0.3)\ntime.sleep(3600)")
KNOCK = "import socket\ntry: socket.create_connection(('{ip}',5432),timeout=1)\nexcept OSError: pass"


def start_flows(tb: Testbed, ips: dict, policy: Path) -> list[subprocess.Popen]:
    """db (h3c1) serves; client (h1c1) holds a connection to it; the policy lets only
    clients in, so web's (h2c1) attempts, once a second, are blocked."""
    def run(container: str, argv: list[str]) -> subprocess.Popen:
        return subprocess.Popen(["ip", "netns", "exec", f"{tb.prefix}-{container}", *argv],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    procs = [run("h3c1", ["python3", "-c", SERVE])]
    policy.write_text(POLICY)
    assert tb.weave("h1", "policy", "apply", str(policy)).returncode == 0
    procs.append(run("h1c1", ["python3", "-c", HOLD.format(ip=ips["h3c1"])]))
    knock = KNOCK.format(ip=ips["h3c1"]).replace('"', '\\"')
    procs.append(run("h2c1", ["sh", "-c", f'while :; do python3 -c "{knock}"; sleep 1; done']))
    return procs


@pytest.fixture(scope="module")
def bed(tmp_path_factory):
    tb = Testbed(tmp_path_factory.mktemp("scope-ui"), f"wtui{secrets.token_hex(2)}")
    try:
        tb.up(3, launch=False)
        args = {1: ("--scope-controls", "--scope-token", T1),
                2: ("--scope-token", T2, "--scope-listen", "192.168.77.2:4040"), 3: ()}
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda h: tb.launch(h, profile="test", launch_args=args[h.index]), tb.hosts))
        ips = {"h1c1": attach(tb, "h1", 1, "client.weave.local", "app=client"),
               "h1c2": attach(tb, "h1", 2, "spare.weave.local"),
               "h2c1": attach(tb, "h2", 1, "web.weave.local", "app=web"),
               "h3c1": attach(tb, "h3", 1, "db.weave.local", "app=db")}
        procs = start_flows(tb, ips, tb.root / "policy.yaml")
        want = {f"{tb.prefix}-{c};<container>" for c in ips}

        def shown():
            hosts = api(tb, "h1", "/api/topology/hosts", T1) or {"nodes": {}}
            conts = api(tb, "h1", "/api/topology/containers", T1) or {"nodes": {}}
            peers = (api(tb, "h1", "/api/topology/weave", T1) or {"nodes": {}})["nodes"].values()
            links = sum(len(p.get("weave_py_links", [])) for p in peers)
            return len(hosts["nodes"]) == 3 and want <= set(conts["nodes"]) and links == 6

        wait_until(shown, timeout=60, what="the whole testbed in h1's app")
        yield tb, ips
    finally:
        for proc in locals().get("procs", []):
            proc.kill()
            proc.wait()
        tb.down()


@pytest.fixture(scope="module")
def browser(tmp_path_factory, bed):
    tb, _ = bed
    wrapper = tmp_path_factory.mktemp("chromium") / "chromium-in-h1"
    wrapper.write_text(f'#!/bin/sh\nexec ip netns exec {tb.host("h1").ns} {CHROMIUM} "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots of the Scope page: {ARTIFACTS}")
    started = time.monotonic()
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(wrapper), args=["--no-sandbox"])
        try:
            yield b
        finally:
            b.close()
    print(f"browser session: {time.monotonic() - started:.1f} s")


class Session:
    """One logged-in (or not) browser context on one app, with its console errors."""

    def __init__(self, browser, base: str, token: str | None) -> None:
        self.base = base
        self.context = browser.new_context(viewport=VIEWPORT)
        self.page: Page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        if token:
            self.page.goto(f"{base}/login?token={token}")

    def fetch(self, path: str, method: str = "GET", body: str | None = None, headers: dict | None = None):
        """(status, text) of a request the page makes (same origin, its cookie)."""
        return self.page.evaluate(
            """async ([path, method, body, headers]) => {
                 const r = await fetch(path, {method, body, headers, credentials: 'same-origin'});
                 return [r.status, await r.text()]; }""", [path, method, body, headers or {}])

    def api_nodes(self, topology: str) -> dict:
        status, text = self.fetch(f"/api/topology/{topology}?" + self.page.evaluate(
            "() => new URLSearchParams(__scope.topologyQuery()).toString()"))
        assert status == 200, text
        return json.loads(text)["nodes"]

    def graph_ids(self) -> set[str]:
        return set(self.page.evaluate("() => __scope.app.graph.cy.nodes().map((n) => n.id())"))

    def wait_frames(self, more_than: int = 0) -> None:
        self.page.wait_for_function("(n) => window.__scope && __scope.frames() > n", arg=more_than, timeout=15000)

    def shot(self, name: str) -> None:
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"))

    def click_node(self, node_id: str) -> None:
        x, y = self.page.evaluate("""(id) => {
            const n = __scope.app.graph.cy.getElementById(id); const p = n.renderedPosition();
            const r = document.querySelector('#graph').getBoundingClientRect(); return [r.left + p.x, r.top + p.y]; }""",
                                  node_id)
        self.page.mouse.click(x, y)

    def graph_matches_api(self, topology: str) -> bool:
        return self.page.evaluate("() => __scope.app.topologyId") == topology and \
            self.graph_ids() == set(self.api_nodes(topology))

    def close(self) -> None:
        self.context.close()


@pytest.fixture(scope="module")
def h1(browser):
    s = Session(browser, H1_URL, T1)
    s.page.goto(f"{H1_URL}/#topology=containers&view=graph")
    s.wait_frames()
    yield s
    s.close()


# -- safe by default ------------------------------------------------------------------
def test_without_the_token_a_login_prompt_and_401_everywhere(browser, bed):
    for base in (H1_URL, H2_URL):
        s = Session(browser, base, None)
        try:
            resp = s.page.goto(f"{base}/")
            assert resp.status == 401
            assert s.page.locator("form#login input#token").is_visible()
            assert s.page.locator("#graph").count() == 0
            for path in ("/api", "/api/topology", "/api/topology/containers", "/api/report", "/api/probes",
                         "/api/weave/config", "/static/app.js", "/api/pipe/00/check"):
                status, text = s.fetch(path)
                assert status == 401, (base, path, status)
                assert text == "401 unauthorized: this Weave Scope app needs its token (see /login)\n"
            status, _ = s.fetch("/api/control/x/y/host_exec", "POST", "{}")
            assert status == 401
            wrong = s.page.goto(f"{base}/login?token=nope")
            assert wrong.status == 401 and "Wrong token" in s.page.content()
            if base == H2_URL:
                s.shot("login")
        finally:
            s.close()
    tb, _ = bed
    assert api(tb, "h2", "/api/topology", None, "http://192.168.77.2:4040") is None
    assert api(tb, "h2", "/api/topology", T2, "http://192.168.77.2:4040") is not None


# -- the page ---------------------------------------------------------------------------
def test_the_page_loads_without_console_errors(h1):
    assert h1.page.locator("#topologies button.topo").count() >= 4
    assert h1.page.evaluate("() => __scope.connected()")
    h1.page.wait_for_function("() => __scope.nodeCount() > 0", timeout=10000)
    assert h1.errors == []


def test_graph_nodes_are_the_apis_per_topology_and_grouping(h1, bed):
    tb, _ = bed
    for topology in ("containers", "hosts", "processes", "containers-by-hostname", "weave"):
        h1.page.click(f"#topologies button[data-topology='{topology}']")
        # the graph's node ids equal the API's at one moment (processes come and go: a second
        # look at both may catch one between them)
        wait_until(lambda: h1.graph_matches_api(topology) and h1.page.evaluate("() => __scope.nodeCount()")
                   == len(h1.graph_ids()), timeout=15, what=f"the {topology} graph = the API's")
    # grouping: containers by DNS name shows the names
    h1.page.click("#topologies button[data-topology='containers-by-hostname']")
    wait_until(lambda: h1.graph_matches_api("containers-by-hostname"), timeout=15, what="by DNS name")
    labels = set(h1.page.evaluate("() => __scope.app.graph.cy.nodes().map((n) => n.data('label'))"))
    assert {"client.weave.local", "web.weave.local", "db.weave.local"} <= labels
    h1.shot("graph-containers-by-dns-name")
    # an option: every container, system ones too, is a different query with the same answer shape
    h1.page.click("#topologies button[data-topology='containers']")
    h1.page.click("#options .opt-group[data-group='system'] button[data-option='all']")
    wait_until(lambda: h1.page.evaluate("() => __scope.topologyQuery().system") == "all"
               and h1.graph_matches_api("containers"), timeout=15, what="the containers graph with system=all")
    h1.shot("graph-containers")
    assert h1.errors == []


def test_search_narrows_the_graph(h1, bed):
    tb, _ = bed
    h1.page.click("#topologies button[data-topology='containers']")
    wait_until(lambda: h1.graph_matches_api("containers"), timeout=15, what="the containers graph")
    total = h1.page.evaluate("() => __scope.nodeCount()")
    client = f"{tb.prefix}-h1c1;<container>"
    h1.page.keyboard.press("Escape")
    h1.page.keyboard.press("/")
    assert h1.page.evaluate("() => document.activeElement.id") == "search"
    h1.page.keyboard.type("client")
    assert h1.page.evaluate("() => __scope.matched()") == [client]
    dimmed = h1.page.evaluate("() => __scope.app.graph.cy.nodes('.dimmed').length")
    assert dimmed == total - 1 and h1.page.inner_text("#search-count") == f"1 of {total}"
    h1.shot("search")
    h1.page.fill("#search", "name: web cpu >= 0% memory < 10gb")
    assert h1.page.evaluate("() => __scope.matched()") == [f"{tb.prefix}-h2c1;<container>"]
    h1.page.fill("#search", "memory > 1000gb")
    assert h1.page.evaluate("() => __scope.matched()") == []
    h1.page.fill("#search", "")
    assert h1.page.evaluate("() => __scope.matched()") is None
    assert h1.page.evaluate("() => __scope.app.graph.cy.nodes('.dimmed').length") == 0


def test_a_click_on_a_node_opens_its_details(h1, bed):
    tb, _ = bed
    web = f"{tb.prefix}-h2c1;<container>"
    h1.page.click("#topologies button[data-topology='containers']")
    wait_until(lambda: h1.graph_matches_api("containers"), timeout=15, what="the containers graph")
    h1.click_node(web)
    h1.page.wait_for_selector("#details .d-head h2", timeout=10000)
    assert h1.page.inner_text("#details .d-head h2") == f"{tb.prefix}-h2c1"
    details = h1.page.inner_text("#details")
    assert "web.weave.local" in details and "PARENTS" in details.upper()
    assert h1.page.locator("#details .control-btn").count() == 0  # h2's probe is not connected to h1's app
    h1.shot("details-container")
    h1.page.click("#details .parents a[data-topology='hosts']")
    wait_until(lambda: h1.page.inner_text("#details .d-head h2") == "h2", timeout=10, what="h2's details")
    assert h1.page.evaluate("() => __scope.app.topologyId") == "hosts"
    h1.page.keyboard.press("Escape")
    assert h1.page.locator("#details").is_hidden()


def test_weave_net_view_shows_every_link_with_its_overlay(h1, bed):
    tb, _ = bed
    h1.page.click("#topologies button[data-topology='weave']")
    wait_until(lambda: h1.graph_matches_api("weave"), timeout=15, what="the weave graph")
    peers = h1.api_nodes("weave")
    want = {}
    for nid, peer in peers.items():
        for link in peer.get("weave_py_links", []):
            want.setdefault(tuple(sorted((nid, link["peer"]))), set()).add(link["overlay"])
    assert len(want) == 3  # a full mesh of 3 peers
    edges = {tuple(sorted((e["source"], e["target"]))): e for e in h1.page.evaluate("() => __scope.edges()")
             if "link" in e["classes"]}
    assert set(edges) == set(want)
    for pair, overlays in want.items():
        assert all(o in edges[pair]["text"] for o in overlays), (pair, overlays, edges[pair]["text"])
        assert "MTU" in edges[pair]["text"] and "crypted" in edges[pair]["text"]
    h1.shot("graph-weave-net")


def test_flows_and_blocked_flows_in_the_containers_view(h1, bed):
    tb, _ = bed
    client, web, db = (f"{tb.prefix}-{c};<container>" for c in ("h1c1", "h2c1", "h3c1"))
    h1.page.click("#topologies button[data-topology='containers']")

    def edges():
        return {(e["source"], e["target"]): e["classes"] for e in h1.page.evaluate("() => __scope.edges()")}

    shown = wait_until(lambda: (lambda e: (client, db) in e and "blocked" in e.get((web, db), "") and e)(edges()),
                       timeout=40, every=0.5, what="client -> db, and web -> db blocked, in the graph")
    assert "blocked" not in shown[(client, db)]
    color = h1.page.evaluate("(id) => __scope.app.graph.cy.getElementById(id).style('line-color')", f"{web}|{db}")
    assert color in ("rgb(255,77,77)", "rgb(255, 77, 77)"), color
    h1.shot("graph-containers-flows")


def test_live_diffs_add_a_node_without_a_new_layout(h1, bed):
    tb, ips = bed
    h1.page.click("#topologies button[data-topology='containers']")
    wait_until(lambda: h1.graph_matches_api("containers"), timeout=15, what="the containers graph")
    layouts, before = h1.page.evaluate("() => __scope.layouts()"), h1.page.evaluate("() => __scope.positions()")
    ips["h3c2"] = attach(tb, "h3", 2, "cache.weave.local")
    added = f"{tb.prefix}-h3c2;<container>"
    wait_until(lambda: added in h1.graph_ids(), timeout=20, what="the new container in the graph")
    assert h1.page.evaluate("() => __scope.layouts()") == layouts
    after = h1.page.evaluate("() => __scope.positions()")
    assert all(after[k] == v for k, v in before.items() if k in after)


def test_table_and_resources_views(h1, bed):
    h1.page.keyboard.press("t")
    h1.page.wait_for_selector("#table table.nodes tbody tr", timeout=5000)
    rows = h1.page.locator("#table tbody tr").count()
    assert rows == h1.page.evaluate("() => __scope.app.nodes.size")
    assert h1.page.inner_text("#table th.sorted").startswith("CPU")  # heaviest first
    h1.page.click("#table th[data-key='label']")
    names = h1.page.locator("#table tbody tr td:first-child").all_inner_texts()
    assert names == sorted(names, key=str.lower)
    h1.shot("table")
    h1.page.keyboard.press("r")
    h1.page.wait_for_selector("#resources .res-host", timeout=10000)
    assert sorted(h1.page.locator("#resources .res-host h3").all_inner_texts()) == ["h1", "h2", "h3"]
    h1.page.click("#resources button[data-metric='Memory']")
    assert h1.page.locator("#resources .seg").count() >= 3
    h1.shot("resources")
    h1.page.keyboard.press("g")
    assert h1.page.locator("#graph").is_visible()


# -- controls -----------------------------------------------------------------------------
def test_a_terminal_into_a_container_runs_ip_addr(h1, bed):
    tb, ips = bed
    client = f"{tb.prefix}-h1c1;<container>"
    h1.page.click("#topologies button[data-topology='containers']")
    wait_until(lambda: h1.graph_matches_api("containers"), timeout=15, what="the containers graph")
    h1.click_node(client)
    h1.page.wait_for_selector("#details button.control-btn[data-id='docker_exec_container']", timeout=15000)
    h1.page.click("#details button.control-btn[data-id='docker_exec_container']")
    h1.page.wait_for_function("() => document.querySelector('#terminal-state').textContent === 'connected'",
                              timeout=10000)
    h1.page.click("#terminal")
    h1.page.keyboard.type("ip addr show ethwe\n")
    wait_until(lambda: ips["h1c1"] in h1.page.evaluate("() => __scope.terminalText()"), timeout=10,
               what="the container's weave address in the terminal")
    assert "ethwe" in h1.page.evaluate("() => __scope.terminalText()")
    h1.shot("terminal")
    h1.page.click("#terminal-close")
    assert h1.page.locator("#terminal-panel").is_hidden()
    # its traces: the `weave attach` that made it
    wait_until(lambda: "weave attach" in h1.page.inner_text("#details"), timeout=10, what="the attach trace")
    h1.page.click("#details details.trace summary")
    assert "weave-cli@h1" in h1.page.inner_text("#details details.trace")
    h1.shot("details-traces")
    assert h1.errors == []


def test_detach_runs_through_the_app(h1, bed):
    tb, _ = bed
    probe = next(p["id"] for p in api(tb, "h1", "/api/probes", T1) if p["hostname"] == "h1")
    spare = f"{tb.prefix}-h1c2"
    status, text = h1.fetch(f"/api/control/{probe}/{spare}%3B%3Ccontainer%3E/weave_py_detach_container", "POST")
    assert status == 200 and f"detached {spare}" in text, text
    assert spare not in tb.weave("h1", "ps").stdout
    status, text = h1.fetch(f"/api/control/{probe}/{spare}%3B%3Ccontainer%3E/no_such_control", "POST")
    assert status == 400 and "unknown control" in text


def test_with_controls_off_none_is_offered_and_the_api_refuses(browser, bed):
    tb, _ = bed
    s = Session(browser, H2_URL, T2)
    try:
        s.page.goto(f"{H2_URL}/#topology=containers")
        s.wait_frames()
        web = f"{tb.prefix}-h2c1;<container>"
        wait_until(lambda: web in s.graph_ids(), timeout=15, what="h2's container in h2's page")
        s.click_node(web)
        s.page.wait_for_selector("#details .d-head h2", timeout=10000)
        s.page.wait_for_timeout(500)
        assert s.page.locator("#details .control-btn").count() == 0
        assert "controls off" in s.page.inner_text("#footer")
        assert s.errors == []  # (the refused control below logs its 403)
        probe = next(p["id"] for p in api(tb, "h2", "/api/probes", T2, H2_URL) if p["hostname"] == "h2")
        status, text = s.fetch(f"/api/control/{probe}/{web.replace(';', '%3B').replace('<', '%3C').replace('>', '%3E')}"
                               "/docker_exec_container", "POST")
        assert status == 403 and "controls are off" in text
    finally:
        s.close()
    assert api(tb, "h3", "/api/weave/config")["controls"] is False


def test_a_restarted_app_is_shown_lost_and_reconnected(h1, bed):
    tb, _ = bed
    frames = h1.page.evaluate("() => __scope.frames()")
    tb.weave("h1", "restart", "scope-app")
    h1.page.wait_for_selector("#status:not([hidden])", timeout=10000)
    assert "lost" in h1.page.inner_text("#status")
    h1.page.wait_for_selector("#status", state="hidden", timeout=30000)
    h1.wait_frames(frames + 1)
    assert h1.page.evaluate("() => __scope.connected()")
