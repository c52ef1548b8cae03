"""The npc service on real kernels: two testbed hosts, real iptables (nft backend) and
ipsets in their namespaces, containers = namespaces attached to h1's weave bridge.

The datapath does not publish ContainerEvents yet, so `publish` does it the way the
datapath will: from inside the host namespace, on the host's bus. Traffic is between
containers on h1 (no overlay yet); policies and pods travel between hosts by gossip.
One testbed serves the module; each test removes the policies it applied. An
`iptables-nft-restore` early in PATH passes through to the real one unless the host's
state dir holds `fail-iptables-restore`: that is how a failing iptables is made.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import select
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from services.datapath.attach import attach
from services.datapath.bridge import ensure_bridge
from services.npc.shortname import ipset_name
from shared.schemas.datapath import ContainerEvent
from weavectl.testbed import Testbed
from tests.e2e.procs import wait_until

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
PY = [sys.executable, "-I", "-S"]
FAIL_FLAG = "fail-iptables-restore"

# c1 web (default), c2 db (default), c3 role=client (ns other), c4 (ns other)
CONTAINERS = {
    "c1": ("10.32.0.1", "default", {"app": "web"}),
    "c2": ("10.32.0.2", "default", {"app": "db"}),
    "c3": ("10.32.0.3", "other", {"role": "client"}),
    "c4": ("10.32.0.4", "other", {}),
}
IP = {name: spec[0] for name, spec in CONTAINERS.items()}

SERVER = textwrap.dedent("""
    import socket, sys, threading
    def serve(port):
        srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind(("0.0.0.0", port)); srv.listen(64)
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=echo, args=(conn,), daemon=True).start()
    def echo(conn):
        while data := conn.recv(100):
            conn.sendall(data)
    for port in (80, 8080):
        threading.Thread(target=serve, args=(port,), daemon=True).start()
    print("ready", flush=True)
    sys.stdin.read()
""")
CONNECT = textwrap.dedent("""
    import socket, sys
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    s.sendall(b"x"); assert s.recv(1) == b"x"
""")
HELD = textwrap.dedent("""
    import socket, sys
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
    print("connected", flush=True)
    for line in sys.stdin:
        s.sendall(b"y"); print("echo" if s.recv(1) == b"y" else "bad", flush=True)
""")
PUBLISH = textwrap.dedent("""
    import asyncio, json, sys
    sys.path.insert(0, sys.argv[1])
    from shared import subjects
    from shared.config import LaunchConfig, state_dir_from_env
    from shared.nats_bus import NatsBus
    from shared.schemas.datapath import ContainerEvent
    async def main():
        launch = LaunchConfig.load(state_dir_from_env())
        bus = await NatsBus.connect(launch.bus_url, launch.bus_token(), "test-datapath")
        for raw in json.loads(sys.stdin.read()):
            await bus.publish(subjects.event("containers"), ContainerEvent.model_validate(raw))
        await bus.nc.flush()
        await bus.close()
    asyncio.run(main())
""")




class Cluster:
    """The module's testbed: h1 with a bridge and four containers, h2 with none."""

    def __init__(self, tb: Testbed, wrappers: Path) -> None:
        self.tb, self.wrappers = tb, wrappers
        self.ns: dict[str, str] = {}      # container -> namespace name
        self.target: dict[str, str] = {}  # container -> testbed target (h1c1...)
        self.servers: list[subprocess.Popen] = []

    def setup(self) -> None:
        h1 = self.tb.host("h1")
        ensure_bridge(h1.ns, peer_name=h1.name)
        for k, name in enumerate(CONTAINERS, 1):
            self.ns[name] = self.tb.add_container(h1, k)
            self.target[name] = f"h1c{k}"
            attach(self.ns[name], [f"{IP[name]}/12"], host=h1.ns)
            server = subprocess.Popen(["ip", "netns", "exec", self.ns[name], *PY, "-c", SERVER], text=True,
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            assert server.stdout.readline().strip() == "ready"
            self.servers.append(server)
        self.publish("h1", [self.event(name) for name in CONTAINERS])
        wait_until(lambda: "Pods: 4 (4 on this host)" in self.status("h1"), what="h1's npc to know its pods")

    def teardown(self) -> None:
        for server in self.servers:
            server.kill()
            server.wait(timeout=10)

    # -- driving ----------------------------------------------------------------------
    def event(self, name: str, labels: dict | None = None) -> ContainerEvent:
        ip, namespace, default_labels = CONTAINERS[name]
        return ContainerEvent(kind="attached", container_id=self.ns[name], cidrs=(f"{ip}/12",),
                              labels=default_labels if labels is None else labels, namespace=namespace)

    def publish(self, host: str, events: list[ContainerEvent]) -> None:
        data = json.dumps([e.model_dump(mode="json") for e in events])
        proc = self.tb.exec(host, [sys.executable, "-I", "-c", PUBLISH, str(ROOT)], input=data)
        assert proc.returncode == 0, proc.stderr

    def weave(self, host: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return self.tb.weave(host, *args, check=check)

    def apply(self, host: str, manifest: str, check: bool = True) -> subprocess.CompletedProcess:
        path = Path(self.tb.host(host).state_dir) / f"policy-{secrets.token_hex(3)}.yaml"
        path.write_text(textwrap.dedent(manifest))
        return self.weave(host, "policy", "apply", str(path), check=check)

    def delete(self, host: str, name: str, *args: str) -> None:
        self.weave(host, "policy", "delete", name, *args)

    def status(self, host: str) -> str:
        return self.weave(host, "policy", "status", check=False).stdout

    def connects(self, src: str, dst: str, port: int = 80, timeout: float = 0.6) -> bool:
        proc = self.tb.exec(self.target[src], [*PY, "-c", CONNECT, IP[dst], str(port), str(timeout)])
        return proc.returncode == 0

    def wait_connects(self, src: str, dst: str, port: int = 80, expect: bool = True, timeout: float = 10.0) -> None:
        wait_until(lambda: self.connects(src, dst, port) == expect, timeout,
                   f"{src} -> {dst}:{port} {'allowed' if expect else 'blocked'}")

    def iptables(self, host: str, *args: str) -> str:
        proc = self.tb.exec(host, ["iptables-nft", *args])
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    def metrics(self, host: str) -> str:
        return self.tb.exec(host, [*PY, "-c", "import urllib.request;print(urllib.request.urlopen("
                                              "'http://127.0.0.1:6781/metrics').read().decode())"]).stdout

    def log(self, host: str) -> str:
        return (Path(self.tb.host(host).state_dir) / "logs" / "npc.log").read_text(errors="replace")


def metric(text: str, name: str, labels: str = "") -> float:
    m = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("npc")
    wrappers = root / "bin"
    wrappers.mkdir()
    for tool in ("iptables-nft-restore", "iptables-legacy-restore"):
        script = wrappers / tool
        script.write_text(f'#!/bin/sh\nif [ -e "$WEAVE_STATE_DIR/{FAIL_FLAG}" ]; then\n'
                          '  echo "iptables-restore: line 2 failed (injected)" >&2; exit 1\nfi\n'
                          f'exec /usr/sbin/{tool} "$@"\n')
        script.chmod(0o755)
    tb = Testbed(root / "tb", f"wtnpc{secrets.token_hex(2)}")  # ours by name if left behind
    old_path = os.environ["PATH"]
    os.environ["PATH"] = f"{wrappers}:{old_path}"  # inherited by the supervisor and its services
    c = Cluster(tb, wrappers)
    try:
        tb.up(2, profile="test")
        os.environ["PATH"] = old_path
        c.setup()
        yield c
    finally:
        os.environ["PATH"] = old_path
        c.teardown()
        tb.down()
        left = [n for n in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
                if n.startswith(tb.prefix)]
        assert not left, f"namespaces left behind: {left}"


@pytest.fixture(autouse=True)
def clean(cluster):
    """Whatever a test leaves (even when it fails): no stored objects, default labels."""
    yield
    (Path(cluster.tb.host("h1").state_dir) / FAIL_FLAG).unlink(missing_ok=True)
    for line in cluster.weave("h1", "policy", "list").stdout.splitlines()[1:]:
        kind, namespace, name, source = line.split()[:4]
        if source == "weave":
            cluster.weave("h1", "policy", "delete", name, "--kind", kind, "-n", namespace)
    cluster.publish("h1", [cluster.event(name) for name in CONTAINERS])
    cluster.wait_connects("c3", "c1")


DENY_ALL = """
    apiVersion: networking.k8s.io/v1
    kind: NetworkPolicy
    metadata: {name: deny-all, namespace: default}
    spec: {podSelector: {}}
"""


def test_default_allow_and_a_policy_from_h2_blocks_new_connections_on_h1(cluster):
    c = cluster
    assert c.connects("c2", "c1") and c.connects("c3", "c1"), "default allow"
    wait_until(lambda: "Pods: 4 (0 on this host)" in c.status("h2"), what="h1's pods gossiped to h2")
    assert f"{IP['c1']:<16} aa:00:00:00:00:01" in c.status("h2")

    held = subprocess.Popen(["ip", "netns", "exec", c.ns["c2"], *PY, "-c", HELD, IP["c1"], "80"], text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert held.stdout.readline().strip() == "connected"
        blocked_before = metric(c.metrics("h1"), "weavenpc_blocked_connections_total",
                                '{dport="80",protocol="tcp"}')
        out = c.apply("h2", DENY_ALL).stdout
        assert out == "networkpolicy default/deny-all configured\n"
        started = time.monotonic()
        c.wait_connects("c2", "c1", expect=False)
        print(f"policy applied on h2 enforced on h1 within {time.monotonic() - started:.2f} s")
        assert not c.connects("c3", "c1"), "c1 is isolated: from another namespace too"
        held.stdin.write("ping\n")
        held.stdin.flush()
        ready, _, _ = select.select([held.stdout], [], [], 5)
        assert ready and held.stdout.readline().strip() == "echo", "the established connection continues"
    finally:
        held.kill()
        held.wait(timeout=10)

    line = wait_until(lambda: re.search(
        rf"TCP connection from {re.escape(IP['c2'])}:\d+ to {re.escape(IP['c1'])}:80 blocked by Weave NPC\. "
        rf"source: namespace default, pod {c.ns['c2']}; destination: namespace default, pod {c.ns['c1']}",
        c.log("h1")), what="the blocked-connection log line")
    assert line
    after = metric(c.metrics("h1"), "weavenpc_blocked_connections_total", '{dport="80",protocol="tcp"}')
    assert after >= blocked_before + 1
    listing = c.weave("h1", "policy", "list").stdout
    assert re.search(r"NetworkPolicy\s+default\s+deny-all\s+weave\s+1\s+aa:00:00:00:00:02\s+enforced", listing)

    assert "        Service: npc\n" in c.weave("h1", "status").stdout, "npc's section of weave status"
    report = json.loads(c.weave("h2", "report").stdout)["NPC"]
    assert report["Pods"] == 4 and report["Policies"][0]["Name"] == "deny-all" and report["Synced"]

    c.delete("h1", "deny-all")
    c.wait_connects("c2", "c1")
    assert "Policies: 0" in c.status("h2")


def test_allow_by_pod_label_by_namespace_label_both_and_a_label_change(cluster):
    c = cluster
    c.apply("h1", """
        kind: NetworkPolicy
        metadata: {name: web, namespace: default}
        spec:
          podSelector: {matchLabels: {app: web}}
          ingress: [{from: [{podSelector: {matchLabels: {app: db}}}]}]
    """)
    c.wait_connects("c3", "c1", expect=False)
    assert c.connects("c2", "c1"), "db pods are allowed in by pod label"
    assert c.connects("c1", "c2"), "db is not a target: default allow"

    c.apply("h2", """
        kind: Namespace
        metadata: {name: other, labels: {team: a}}
        ---
        kind: NetworkPolicy
        metadata: {name: web, namespace: default}
        spec:
          podSelector: {matchLabels: {app: web}}
          ingress: [{from: [{namespaceSelector: {matchLabels: {team: a}}}]}]
    """)
    c.wait_connects("c3", "c1")
    assert c.connects("c4", "c1") and not c.connects("c2", "c1"), "by namespace label now, not by pod label"

    c.apply("h1", """
        kind: NetworkPolicy
        metadata: {name: web, namespace: default}
        spec:
          podSelector: {matchLabels: {app: web}}
          ingress:
          - from: [{namespaceSelector: {matchLabels: {team: a}}, podSelector: {matchLabels: {role: client}}}]
    """)
    c.wait_connects("c4", "c1", expect=False)
    assert c.connects("c3", "c1"), "namespace team=a and pod role=client"

    c.publish("h1", [c.event("c4", {"role": "client"})])  # c4 gains the label: let in
    c.wait_connects("c4", "c1")
    c.publish("h1", [c.event("c4")])
    c.wait_connects("c4", "c1", expect=False)

    c.delete("h2", "web")
    c.delete("h1", "other", "--kind", "Namespace")
    c.wait_connects("c2", "c1")


def test_ip_block_with_except(cluster):
    c = cluster
    c.apply("h1", """
        kind: NetworkPolicy
        metadata: {name: by-cidr, namespace: default}
        spec:
          podSelector: {matchLabels: {app: web}}
          ingress: [{from: [{ipBlock: {cidr: 10.32.0.0/29, except: [10.32.0.3/32]}}]}]
    """)
    c.wait_connects("c3", "c1", expect=False)
    assert c.connects("c2", "c1") and c.connects("c4", "c1")
    c.delete("h1", "by-cidr")
    c.wait_connects("c3", "c1")


def test_egress_to_one_port_only(cluster):
    c = cluster
    c.apply("h2", """
        kind: NetworkPolicy
        metadata: {name: db-out, namespace: default}
        spec:
          podSelector: {matchLabels: {app: db}}
          policyTypes: [Egress]
          egress: [{ports: [{protocol: TCP, port: 8080}]}]
    """)
    c.wait_connects("c2", "c1", 80, expect=False)
    assert c.connects("c2", "c1", 8080) and c.connects("c2", "c3", 8080)
    assert c.connects("c1", "c2", 80), "ingress to db is untouched"
    c.delete("h2", "db-out")
    c.wait_connects("c2", "c1", 80)


def test_a_policy_that_cannot_be_enforced_is_refused_and_the_others_stay(cluster):
    c = cluster
    c.apply("h1", DENY_ALL)
    c.wait_connects("c2", "c1", expect=False)
    bad = c.apply("h1", """
        kind: NetworkPolicy
        metadata: {name: good-one, namespace: default}
        spec: {podSelector: {}, ingress: [{}]}
        ---
        kind: NetworkPolicy
        metadata: {name: named-port, namespace: default}
        spec:
          podSelector: {}
          ingress: [{ports: [{port: http}]}]
        ---
        kind: NetworkPolicy
        metadata: {name: bad-cidr, namespace: default}
        spec:
          podSelector: {}
          ingress: [{from: [{ipBlock: {cidr: 10.32.0.0/33}}]}]
    """, check=False)
    assert bad.returncode == 1
    assert "NetworkPolicy default/named-port: named ports" in bad.stderr
    assert "NetworkPolicy default/bad-cidr: invalid CIDR '10.32.0.0/33'" in bad.stderr
    assert "nothing applied" in bad.stderr
    assert "weave policy apply refused" in c.log("h1") and "default/named-port" in c.log("h1")
    assert "good-one" not in c.weave("h1", "policy", "list").stdout
    assert not c.connects("c2", "c1"), "deny-all is still enforced"
    c.delete("h1", "deny-all")
    c.wait_connects("c2", "c1")


def test_chains_and_sets_flushed_by_hand_are_repaired(cluster):
    c = cluster
    c.apply("h1", """
        kind: NetworkPolicy
        metadata: {name: web, namespace: default}
        spec:
          podSelector: {matchLabels: {app: web}}
          ingress: [{from: [{podSelector: {matchLabels: {app: db}}}]}]
    """)
    c.wait_connects("c3", "c1", expect=False)
    db_set = ipset_name("default:app=db")
    flushed = c.tb.exec("h1", ["sh", "-c", f"iptables-nft -F WEAVE-NPC-INGRESS && ipset flush '{db_set}' && "
                                           f"iptables-nft -S WEAVE-NPC-INGRESS && ipset list '{db_set}'"], check=True)
    assert "-A WEAVE-NPC-INGRESS" not in flushed.stdout and "10.32.0.2" not in flushed.stdout
    wait_until(lambda: "app=db" in c.iptables("h1", "-S", "WEAVE-NPC-INGRESS"), what="the rule back")
    c.wait_connects("c2", "c1")  # and the member: resync repaired both
    flushed = c.tb.exec("h1", ["sh", "-c", "iptables-nft -F FORWARD && iptables-nft -S FORWARD"], check=True)
    assert "weave" not in flushed.stdout  # the hooks gone: nothing would be policed
    hooks = lambda: [line for line in c.iptables("h1", "-S", "FORWARD").splitlines() if " weave " in line]  # noqa
    wait_until(lambda: len(hooks()) == 6, what="the hooks back")
    assert not c.connects("c3", "c1")
    c.delete("h1", "web")
    c.wait_connects("c3", "c1")


def test_a_failing_iptables_is_retried_counted_and_fails_closed(cluster):
    c = cluster
    flag = Path(c.tb.host("h1").state_dir) / FAIL_FLAG
    errors = lambda: metric(c.metrics("h1"), "weavenpc_policy_enforcement_errors")  # noqa: E731
    before = errors()
    flag.touch()
    try:
        reply = c.apply("h1", """
            kind: NetworkPolicy
            metadata: {name: web, namespace: default}
            spec:
              podSelector: {matchLabels: {app: web}}
              ingress: [{from: [{podSelector: {matchLabels: {app: db}}}]}]
        """)
        assert "not yet enforced" in reply.stderr
        wait_until(lambda: errors() >= before + 3, what="failed attempts counted")
        assert "NOT SYNCED" in c.status("h1")
        assert not c.connects("c3", "c1"), "denied by the new policy: never let through meanwhile"
        assert "iptables-restore failed: iptables-restore: line 2 failed (injected)" in c.log("h1")
    finally:
        flag.unlink()
    c.wait_connects("c2", "c1")  # the retry succeeds: the policy's allow rule is in
    assert not c.connects("c3", "c1") and "synced" in c.status("h1")
    c.delete("h1", "web")
    c.wait_connects("c3", "c1")
