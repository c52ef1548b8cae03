"""The Kubernetes add-on on real hosts: a 3-host testbed launched with no peers, an API
server answering in the real API's shapes (tests/kube_api.py, seeded with the Node list
of tests/fixtures/kubernetes/testbed-nodes.json, enforcing the DaemonSet's RBAC) served
on the testbed's underlay from a namespace of its own, and `weave kube-peers run` on
every host as the DaemonSet runs it. The hosts find each other from the Node list,
every host turns ready (the readiness probe's GET /status/kube-peers), and when h3's
Node is deleted its address space is taken over by exactly one of h1 and h2, which
race for it (no reclaim delay) under the weave-net ConfigMap's annotations; when the
Node comes back, h3 (its IPAM data dropped, as launch.sh does for a reclaimed peer)
rejoins, turns ready and gets an address: scaling down and up leaves no space behind."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.procs import running, wait_all_dead, wait_until
from tests.e2e.test_ipam import http
from tests.kube_api import ADMIN_TOKEN, FIXTURES, SA_TOKEN
from weavectl.testbed import UNDERLAY, Testbed, run, weave_bin

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]
API_ADDR = f"{UNDERLAY}.200"
API = f"http://{API_ADDR}:6443"
PEERS_KEY = "kube-peers.weave.works/peers"

ADMIN = r"""
import json, sys, urllib.request
body = sys.argv[4].encode() if len(sys.argv) > 4 else None
req = urllib.request.Request(sys.argv[2], method=sys.argv[1], data=body,
                             headers={"Authorization": "Bearer " + sys.argv[3], "Content-Type": "application/json"})
with urllib.request.urlopen(req, timeout=10) as r:
    print(r.read().decode())
"""


class KubeTestbed:
    """The testbed, its API server namespace and process, and a kube-peers per host."""

    def __init__(self, tb: Testbed, root: Path) -> None:
        self.tb, self.root = tb, root
        self.api_ns = f"{tb.prefix}-kapi"
        self.api_log = root / "api-requests.jsonl"
        self.token = root / "sa-token"
        self.token.write_text(SA_TOKEN)
        self.api_proc: subprocess.Popen | None = None
        self.daemons: dict[str, subprocess.Popen] = {}

    def start_api(self) -> None:
        run(["ip", "netns", "add", self.api_ns])
        run(["ip", "-n", self.tb.wire, "link", "add", "kapi", "type", "veth", "peer", "name", "eth0",
             "netns", self.api_ns])
        run(["ip", "-n", self.tb.wire, "link", "set", "kapi", "master", "br0", "up"])
        run(["ip", "-n", self.api_ns, "addr", "add", f"{API_ADDR}/24", "dev", "eth0"])
        run(["ip", "-n", self.api_ns, "link", "set", "eth0", "up"])
        self.api_proc = subprocess.Popen(
            ["ip", "netns", "exec", self.api_ns, sys.executable, "-m", "tests.kube_api", "--listen", f"{API_ADDR}:6443",
             "--nodes", str(FIXTURES / "testbed-nodes.json"), "--log", str(self.api_log)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=open(self.root / "api.log", "w"), text=True)
        assert self.api_proc.stdout.readline().strip() == API, "the API server is up"

    def start_kube_peers(self, host: str) -> None:
        h = self.tb.host(host)
        log = open(self.root / f"kube-peers-{host}.log", "a")  # beside the API's log, kept by pytest
        self.daemons[host] = subprocess.Popen(
            ["ip", "netns", "exec", h.ns, weave_bin(), "--state-dir", h.state_dir, "kube-peers", "run", "--api", API,
             "--token-file", str(self.token), "--node-name", h.nickname, "--reclaim-delay", "0",
             "--retry-period", "0.2", "--readiness-interval", "0.5"], stdout=log, stderr=subprocess.STDOUT)

    def stop_kube_peers(self, host: str) -> None:
        proc = self.daemons.pop(host)
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def admin(self, method: str, path: str, body: dict | None = None) -> dict:
        """The test's `kubectl`: a request as the cluster's admin, from h1."""
        argv = [sys.executable, "-c", ADMIN, method, API + path, ADMIN_TOKEN] + ([json.dumps(body)] if body else [])
        return json.loads(self.tb.exec("h1", argv, check=True).stdout)

    def check_peer_new(self, host: str) -> int:
        h = self.tb.host(host)
        return self.tb.exec(host, [weave_bin(), "--state-dir", h.state_dir, "kube-peers", "check-peer-new", "--api",
                                   API, "--token-file", str(self.token)]).returncode

    def peer_list(self) -> list[dict]:
        cm = self.admin("GET", "/api/v1/namespaces/kube-system/configmaps/weave-net")
        return json.loads(cm["metadata"]["annotations"][PEERS_KEY])["Peers"] or []

    def requests(self) -> list[dict]:
        return [json.loads(line) for line in self.api_log.read_text().splitlines()]

    def close(self) -> None:
        for host in list(self.daemons):
            self.stop_kube_peers(host)
        if self.api_proc is not None:
            self.api_proc.kill()
            self.api_proc.wait(5)
        run(["ip", "netns", "del", self.api_ns], check=False)


@pytest.fixture
def kube(testbed_factory, tmp_path):
    tb = testbed_factory()
    tb.up(3, launch=False)
    k = KubeTestbed(tb, tmp_path)
    try:
        k.start_api()
        yield k
    finally:
        pids = [p.pid for p in (*k.daemons.values(), k.api_proc) if p is not None]
        k.close()
        assert not wait_all_dead(pids), "kube-peers and the API server are gone"


def status(tb: Testbed, host: str, path: str) -> tuple[int, str]:
    return http(tb, host, ("GET", path))[0]


def owned(tb: Testbed, host: str) -> dict[str, int]:
    """Addresses of the ring per owning peer, as `host` sees it."""
    code, body = status(tb, host, "/report")
    assert code == 200, body
    out: dict[str, int] = {}
    for e in json.loads(body)["IPAM"]["Entries"] or ():
        out[e["Peer"]] = out.get(e["Peer"], 0) + e["Size"]
    return out


def test_a_mesh_from_the_node_list_and_one_reclaim_per_deleted_node(kube):
    tb = kube.tb
    listed = tb.exec("h1", [weave_bin(), "kube-peers", "list", "--api", API, "--token-file", str(kube.token)],
                     check=True).stdout.split()
    assert listed == [f"{UNDERLAY}.{i}" for i in (1, 2, 3)], "every Node's InternalIP"
    tb.launch_all(profile="test", connect=False, launch_args=("--ipalloc-init", f"consensus={len(listed)}"))
    h1, h2, h3 = (tb.host(h) for h in ("h1", "h2", "h3"))
    code, body = status(tb, "h1", "/status/kube-peers")
    assert code == 503 and "kube-peers service did not answer" in body, "not ready without kube-peers"
    started = time.monotonic()
    for host in ("h1", "h2", "h3"):
        kube.start_kube_peers(host)

    # a full mesh with no peer on any command line, and every host ready
    for host in ("h1", "h2", "h3"):
        wait_until(lambda host=host: status(tb, host, "/status/kube-peers")[0] == 200, timeout=90,
                   what=f"{host} ready ({status(tb, host, '/status/kube-peers')[1]!r})")
        report = json.loads(status(tb, host, "/report")[1])
        assert len(report["Router"]["Peers"]) == 3
        assert sorted(report["Router"]["Targets"]) == [o.addr for o in tb.hosts if o.nickname != host], \
            "the other Nodes' addresses, told by kube-peers"
        assert report["KubePeers"]["Ready"] is True and report["IPAM"]["Entries"]
    ready_s = time.monotonic() - started
    text = status(tb, "h2", "/status")[1]
    assert "Service: kube-peers" in text and "Status: ready" in text
    assert sorted((p["PeerName"], p["NodeName"]) for p in kube.peer_list()) == \
        [(h.name, h.nickname) for h in (h1, h2, h3)]
    for host in ("h1", "h2", "h3"):  # each host holds an address, so each owns some space
        code, cidr = http(tb, host, ("POST", f"/ip/kube-{host}"))[0]
        assert code == 200, cidr

    def everyone_owns():
        o = owned(tb, "h1")
        return o if set(o) == {h1.name, h2.name, h3.name} and all(o.values()) and o == owned(tb, "h2") else None

    before = wait_until(everyone_owns, what="every host owns space")

    # h3's node goes away: its stack stops, then its Node is deleted
    kube.stop_kube_peers("h3")
    tb.weave(h3, "stop", timeout=30)
    deleted = time.monotonic()
    kube.admin("DELETE", "/api/v1/nodes/h3")
    wait_until(lambda: sorted(p["PeerName"] for p in kube.peer_list()) == [h1.name, h2.name], timeout=60,
               what="h3's peer released from the ConfigMap")  # (in the order the peers registered)
    for host in ("h1", "h2"):
        wait_until(lambda host=host: h3.name not in owned(tb, host), timeout=60, what=f"{host}: h3 owns nothing")
    reclaim_s = time.monotonic() - deleted
    after = owned(tb, "h1")
    assert owned(tb, "h2") == after, "h1 and h2 agree on the ring"
    gained = {h.nickname: after[h.name] - before[h.name] for h in (h1, h2)}
    assert sorted(gained.values()) == [0, before[h3.name]], f"exactly one host took h3's space over: {gained}"
    reclaimers = [host for host in ("h1", "h2")
                  if any(r["Peer"] == h3.name for r in json.loads(status(tb, host, "/report")[1])
                         ["KubePeers"]["Reclaimed"])]
    assert reclaimers == [h for h, g in gained.items() if g], "the one that rmpeer'd is the one that gained"
    cm = kube.admin("GET", "/api/v1/namespaces/kube-system/configmaps/weave-net")
    assert set(cm["metadata"]["annotations"]) == {PEERS_KEY}, "no claim left"
    for host, other in (("h1", h2), ("h2", h1)):
        assert status(tb, host, "/status/targets")[1].split() == [other.addr], f"{host} forgot h3's address"
        assert status(tb, host, "/status/kube-peers")[0] == 200, f"{host} still ready"

    # the cluster scales up again: h3's Node comes back, and its pod starts as launch.sh does
    assert (kube.check_peer_new("h3"), kube.check_peer_new("h1")) == (0, 9), "h3's peer was reclaimed, h1's not"
    for f in Path(h3.state_dir).glob("ipam.db*"):  # its ring would clash with the one that took its space over
        f.unlink()
    node = next(n for n in json.loads((FIXTURES / "testbed-nodes.json").read_text())["items"]
                if n["metadata"]["name"] == "h3")
    kube.admin("POST", "/api/v1/nodes", {**node, "metadata": {**node["metadata"], "resourceVersion": None}})
    tb.launch(h3, profile="test", connect=False, launch_args=("--ipalloc-init", f"consensus={len(listed)}"))
    kube.start_kube_peers("h3")
    for host in ("h1", "h2", "h3"):
        wait_until(lambda host=host: status(tb, host, "/status/kube-peers")[0] == 200, timeout=90,
                   what=f"{host} ready again ({status(tb, host, '/status/kube-peers')[1]!r})")
    code, cidr = http(tb, "h3", ("POST", "/ip/kube-h3-again"))[0]
    assert code == 200, f"h3 gets an address after coming back: {cidr}"
    wait_until(lambda: (o := owned(tb, "h3")).get(h3.name) and o == owned(tb, "h1"), what="one ring, h3 in it")
    assert sorted(p["PeerName"] for p in kube.peer_list()) == [h1.name, h2.name, h3.name]

    requests = kube.requests()
    assert not [r for r in requests if r["status"] == 403], "RBAC granted everything kube-peers asked"
    updates = [r["status"] for r in requests if r["verb"] == "update" and r["resource"] == "configmaps"]
    print(f"ConfigMap updates: {len(updates)}, of which 409 Conflict: {updates.count(409)}; "
          f"reclaimed by {reclaimers[0]}; h3's space: {before[h3.name]} addresses; all ready {ready_s:.1f} s "
          f"after kube-peers started; h3's space in h1's and h2's rings {reclaim_s:.1f} s after its Node went")
    assert all(running(p.pid) for p in kube.daemons.values())
