"""Weave's Docker network plugin and Docker watcher, with real engines: two testbed
hosts, each with its own dockerd (which finds its host's plugin socket in its own
/run/docker/plugins) and a launched weave stack (its docker-plugin service).

- `docker network create --driver weave --ipam-driver weave weave`, then
  `docker run --net weave` on both hosts: addresses from weave IPAM, pings across hosts,
  names in weaveDNS, `weave ps` by Docker name, npc's NetworkPolicy on Docker labels;
- removing a container releases its address and its name;
- `weave attach` / `dns-add` / `ps` by a Docker container's name, and a container that
  stops is detached with its names gone, as Weave's watcher does."""
from __future__ import annotations

import json
import re
import secrets

import pytest

from tests.e2e.procs import wait_until
from weavectl.testbed import Testbed

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
HTTPD = "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 7000 -h /www"


@pytest.fixture(scope="module")
def tb(tmp_path_factory):
    tb = Testbed(tmp_path_factory.mktemp("plugin"), f"wtk{secrets.token_hex(2)}")
    try:
        tb.up(2, docker=True, password="plugin-secret", profile="test")
        tb.load_image("busybox")
        for h in ("h1", "h2"):
            out = docker(tb, h, "network", "create", "--driver", "weave", "--ipam-driver", "weave", "weave")
            assert out.returncode == 0, out.stderr
        yield tb
    finally:
        tb.down()


def docker(tb: Testbed, host: str, *args: str, timeout: float = 60):
    return tb.exec(host, ["docker", *args], timeout=timeout)


def run(tb: Testbed, host: str, name: str, *args: str, cmd: str = "sleep 600") -> str:
    out = docker(tb, host, "run", "-d", "--name", name, *args, "weave-busybox", "sh", "-c", cmd)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def weave_ip(tb: Testbed, host: str, name: str) -> str:
    return docker(tb, host, "inspect", "-f", "{{.NetworkSettings.Networks.weave.IPAddress}}", name).stdout.strip()


def ps(tb: Testbed, host: str) -> dict[str, list[str]]:
    """weave ps: first column -> the rest."""
    return {ln.split()[0]: ln.split()[1:] for ln in tb.weave(host, "ps").stdout.splitlines() if ln.strip()}


def lookup(tb: Testbed, host: str, name: str) -> list[str]:
    return tb.weave(host, "dns-lookup", name, check=False).stdout.split()


def active_ips(tb: Testbed, host: str) -> int:
    """Addresses IPAM has allocated on this host's peer (weave status ipam's "(N active)")."""
    text = tb.weave(host, "status", "ipam").stdout
    line = next(ln for ln in text.splitlines() if f"({host})" in ln)
    return int(re.search(r"\((\d+) active\)", line).group(1))


def reaches(tb: Testbed, host: str, client: str, ip: str) -> bool:
    get = f"printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} 7000"  # (busybox-static's wget crashes)
    out = docker(tb, host, "exec", client, "sh", "-c", get, timeout=20)
    return "hello" in out.stdout


def test_plugin_network_across_hosts_with_names_and_policy(tb, tmp_path):
    db_id = run(tb, "h1", "db", "--net", "weave", "--label", "app=db", cmd=HTTPD)
    run(tb, "h2", "web", "--net", "weave", "--label", "app=web")
    run(tb, "h2", "other", "--net", "weave", "--label", "app=other")
    db = weave_ip(tb, "h1", "db")
    assert db.startswith("10.3") and int(db.split(".")[1]) in range(32, 48), db  # 10.32.0.0/12, weave IPAM's

    # addresses and names: weave ps by Docker name, weaveDNS on both hosts
    wait_until(lambda: "db" in ps(tb, "h1"), what="db adopted on h1")
    assert f"{db}/12" in ps(tb, "h1")["db"]
    wait_until(lambda: lookup(tb, "h2", "db.weave.local") == [db], what="db.weave.local on h2")
    gateway = docker(tb, "h2", "exec", "web", "sh", "-c", "ip route | awk '/default/{print $3}'").stdout.strip()
    answer = docker(tb, "h2", "exec", "web", "nslookup", "db.weave.local", gateway).stdout
    assert db in answer, answer  # a container asks weaveDNS on its host

    # across hosts, then under npc's policy on the containers' Docker labels
    wait_until(lambda: reaches(tb, "h2", "other", db), what="other -> db before any policy")
    assert docker(tb, "h2", "exec", "web", "ping", "-c1", "-W2", db).returncode == 0
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    assert tb.weave("h2", "policy", "apply", str(policy)).returncode == 0
    wait_until(lambda: not reaches(tb, "h2", "other", db), what="app=other refused")
    assert reaches(tb, "h2", "web", db), "app=web still allowed"
    tb.weave("h2", "policy", "delete", "db-from-web")
    assert db_id


def test_removed_container_releases_its_address_and_name(tb):
    run(tb, "h1", "gone", "--net", "weave")
    ip = weave_ip(tb, "h1", "gone")
    wait_until(lambda: lookup(tb, "h2", "gone.weave.local") == [ip], what="gone.weave.local known")
    held = active_ips(tb, "h1")
    assert docker(tb, "h1", "rm", "-f", "gone").returncode == 0
    wait_until(lambda: "gone" not in ps(tb, "h1"), what="gone detached")
    wait_until(lambda: lookup(tb, "h2", "gone.weave.local") == [], what="its name removed everywhere")
    wait_until(lambda: active_ips(tb, "h1") == held - 1, what="its address released")
    run(tb, "h1", "again", "--net", "weave")
    assert weave_ip(tb, "h1", "again") == ip, "the released address is handed out again"


def test_attach_by_docker_name_and_detach_when_it_stops(tb):
    cid = run(tb, "h2", "plain")  # on Docker's default bridge: weave attach gives it a weave interface
    held = active_ips(tb, "h2")
    out = tb.weave("h2", "attach", "--name", "plain.weave.local", "plain")
    ip = out.stdout.strip()
    assert re.fullmatch(r"10\.\d+\.\d+\.\d+", ip), out.stdout
    row = ps(tb, "h2")["plain"]
    assert f"{ip}/12" in row
    assert tb.weave("h2", "ps", cid[:12]).stdout.split()[0] == "plain", "by ID too"
    assert "ethwe" in docker(tb, "h2", "exec", "plain", "ip", "-o", "link").stdout
    assert tb.weave("h2", "dns-add", "plain", "-h", "alias.weave.local").returncode == 0
    wait_until(lambda: lookup(tb, "h1", "alias.weave.local") == [ip], what="alias on h1")
    assert lookup(tb, "h1", "plain.weave.local") == [ip]
    run(tb, "h1", "pinger", "--net", "weave")
    wait_until(lambda: docker(tb, "h1", "exec", "pinger", "ping", "-c1", "-W1", ip).returncode == 0,
               what="a plugin container on h1 reaches the attached one on h2")
    assert active_ips(tb, "h2") == held + 1

    assert docker(tb, "h2", "stop", "-t", "1", "plain").returncode == 0
    wait_until(lambda: "plain" not in ps(tb, "h2"), what="the stopped container detached")
    wait_until(lambda: lookup(tb, "h1", "plain.weave.local") == [] and lookup(tb, "h1", "alias.weave.local") == [],
               what="its names removed")
    wait_until(lambda: active_ips(tb, "h2") == held, what="its address released")
    refused = tb.weave("h2", "attach", "plain", check=False)
    assert refused.returncode == 1 and "not running" in refused.stderr


def scope(tb: Testbed, host: str, path: str):
    out = tb.exec(host, ["curl", "-sf", "--max-time", "3", f"http://127.0.0.1:4040{path}"], timeout=10)
    return json.loads(out.stdout) if out.returncode == 0 and out.stdout else {}


def scope_sees_docker(tb: Testbed, cid: str):
    """None once h1's Scope app shows the container, its image and its processes; else what is missing."""
    node = scope(tb, "h1", "/api/topology/containers").get("nodes", {}).get(f"{cid};<container>")
    if not node or node.get("label") != "scoped":
        return f"container node {node}"
    images = {n.get("label") for n in scope(tb, "h1", "/api/topology/containers-by-image").get("nodes", {}).values()}
    if "weave-busybox" not in images:
        return f"images {images}"
    detail = json.dumps(scope(tb, "h1", f"/api/topology/containers/{cid};<container>"))
    if not all(word in detail for word in ('"tier"', "weave-busybox", "sleep 600")):
        return f"label, image and command in the details: {detail[:300]}"
    procs = scope(tb, "h1", "/api/topology/processes").get("nodes", {}).values()
    linked = [p for p in procs if any(par.get("id") == f"{cid};<container>" for par in p.get("parents") or [])]
    return None if linked else "no process linked to the container"


def test_scope_sees_docker_containers_images_and_their_processes(tb):
    cid = run(tb, "h1", "scoped", "--label", "tier=scoped", cmd="sleep 600")  # Docker's bridge, not weave
    why: list = [None]

    def shown() -> bool:
        why[0] = scope_sees_docker(tb, cid)
        return why[0] is None
    try:
        wait_until(shown, timeout=30, what="Scope showing the Docker container")
    except AssertionError:
        raise AssertionError(f"h1's Scope does not show the Docker container: {why[0]}") from None
