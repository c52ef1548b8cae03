"""NetworkPolicy across hosts with pods made by `weave attach --label` (the datapath's
container events reach every host's npc through gossip), enforced on real TCP over the
sleeve: only the labelled client gets through."""
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
