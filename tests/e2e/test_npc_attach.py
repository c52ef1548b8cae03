"""NetworkPolicy across hosts with pods made by `weave attach --label` (the datapath's
container events reach every host's npc through gossip), enforced on real TCP between
hosts: only the labelled client gets through. Also the fastpath's VXLAN port as a router
port: traffic from another host is not egress-policed again on arrival."""
from __future__ import annotations

import subprocess

from tests.e2e.procs import wait_until

POLICY = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: db-from-web, namespace: default}
spec:
  podSelector: {matchLabels: {app: db}}
  ingress:
    - from: [{podSelector: {matchLabels: {app: web}}}]
      ports: [{protocol: TCP, port: 7000}]
"""


def connects(tb, client: str, ip: str) -> bool:
    probe = f"import socket;socket.create_connection(('{ip}',7000),timeout=1.5).close()"
    return tb.exec(client, ["python3", "-c", probe], timeout=20).returncode == 0


def test_policy_between_labelled_pods_on_different_hosts(testbed_factory, tmp_path):
    tb = testbed_factory()
    tb.up(2)
    h1, h2 = tb.host("h1"), tb.host("h2")
    for h, k, label in ((h1, 1, "app=db"), (h2, 1, "app=web"), (h2, 2, "app=other")):
        ns = f"{h.ns}c{k}"
        subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        h.containers.append(ns)
        out = tb.weave(h, "attach", "--label", label, ns, check=False)
        assert out.returncode == 0, out.stderr
    db_ip = tb.weave(h1, "ps", f"{h1.ns}c1").stdout.split()[2].split("/")[0]
    server = subprocess.Popen(["ip", "netns", "exec", f"{h1.ns}c1", "python3", "-c",
                               "import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
                               "s.bind(('0.0.0.0',7000));s.listen(16)\nwhile True: s.accept()[0].close()"])
    try:
        wait_until(lambda: connects(tb, "h2c2", db_ip), what="default allow, across hosts")
        assert connects(tb, "h2c1", db_ip)
        policy = tmp_path / "policy.yaml"
        policy.write_text(POLICY)
        assert tb.weave(h2, "policy", "apply", str(policy)).returncode == 0  # applied on the client's host
        wait_until(lambda: not connects(tb, "h2c2", db_ip), what="app=other refused on h1")
        assert connects(tb, "h2c1", db_ip), "app=web still allowed"
        status = tb.weave(h1, "status", "npc").stdout
        assert "db-from-web" in status
        tb.weave(h1, "policy", "delete", "db-from-web")
        wait_until(lambda: connects(tb, "h2c2", db_ip), what="access restored")
    finally:
        server.kill()
        server.wait()


EGRESS_POLICY = """
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: locked-egress, namespace: default}
spec:
  podSelector: {matchLabels: {app: locked}}
  policyTypes: [Egress]
"""


def test_exposed_remote_host_reaches_a_pod_over_the_fastpath_under_egress_policy(testbed_factory, tmp_path):
    """Once any egress policy exists, NEW traffic that no egress rule marks is dropped
    (weave-npc). Traffic arriving from another host is that host's business, exempt as
    it comes in through vethwe-bridge (the sleeve) and vxlan-6784 (the fastpath) alike:
    here h2's exposed host address, which is no pod, connects to a pod on h1 over the
    fastpath before and after an egress policy appears."""
    tb = testbed_factory()
    tb.up(2, launch=False)
    tb.launch_all(datapath="fastpath")
    h1, h2 = tb.host("h1"), tb.host("h2")
    ns = f"{h1.ns}c1"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
    h1.containers.append(ns)
    assert tb.weave(h1, "attach", "--label", "app=db", "10.44.1.1/16", ns).returncode == 0
    assert tb.weave(h2, "expose", "10.44.2.254/16").stdout.strip() == "10.44.2.254"
    wait_until(lambda: "weave-py-vxlan" in tb.weave(h2, "status", "connections").stdout, what="fastpath")
    server = subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-c",
                               "import socket;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
                               "s.bind(('0.0.0.0',7000));s.listen(16)\nwhile True: s.accept()[0].close()"])
    try:
        wait_until(lambda: connects(tb, "h2", "10.44.1.1"), what="exposed h2 reaches the pod on h1")
        policy = tmp_path / "egress.yaml"
        policy.write_text(EGRESS_POLICY)
        assert tb.weave(h1, "policy", "apply", str(policy)).returncode == 0
        wait_until(lambda: "-j DROP" in _egress_chain(tb), what="h1 drops unmarked NEW egress")
        for _ in range(3):  # new connections each time: the exemption, not conntrack, lets them in
            assert connects(tb, "h2", "10.44.1.1"), "h2's traffic over vxlan-6784 was egress-policed on h1"
        assert "--physdev-in vxlan-6784" in _egress_chain(tb)
    finally:
        server.kill()
        server.wait()


def _egress_chain(tb) -> str:
    saved = tb.exec("h1", ["iptables-save", "-t", "filter"]).stdout
    return "\n".join(line for line in saved.splitlines() if line.startswith("-A WEAVE-NPC-EGRESS "))
