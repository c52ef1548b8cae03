"""The Kubernetes source (lightkube, shared/kube.py) against the fake API server of
tests/kube_api.py serving the objects and the recorded watch stream of
tests/fixtures/kubernetes over real HTTP: list then watch, events, bookmarks, re-watch
from the last resourceVersion, 410 -> relist, HTTP errors retried, the bearer token,
RBAC of the DaemonSet's manifest; and an npc service taking its policies and pods from it."""
from __future__ import annotations

import asyncio
import time

import pytest

from services.npc.kube import Gone, KubeSource, Reflector
from services.npc.memory_netfilter import MemoryKernel
from services.npc.policy import NetworkPolicyController
from services.npc.service import NpcApp
from services.npc.shortname import ipset_name
from services.npc.world import World
from shared import subjects
from shared.bus import MemoryBroker, MemoryBus
from shared.clock import RealClock
from shared.config import LaunchConfig, NpcSettings, for_service
from shared.errors import RemoteProtocolError
from shared.http import HttpRouter
from shared.metrics import new_registry
from shared.schemas.datapath import ContainerEvent
from shared.schemas.npc import ListReply, ListRequest
from shared.service import ServiceContext
from tests.kube_api import SA_TOKEN, FakeKubeApi, fixture


def ns(name, rv="1", **labels):
    return {"metadata": {"name": name, "uid": f"ns-{name}", "resourceVersion": rv, "labels": labels}}


def pod(name, ip, rv="1", namespace="default", **labels):
    return {"metadata": {"name": name, "namespace": namespace, "uid": f"pod-{name}", "resourceVersion": rv,
                         "labels": labels}, "status": {"podIP": ip, "phase": "Running"}}


def seeded_api() -> FakeKubeApi:
    """Namespace default, pod web (app=web), policy np (web accepts db) from the fixtures."""
    api = FakeKubeApi()
    api.seed("namespaces", fixture("namespaces.json"))
    api.seed("pods", fixture("pods.json"))
    api.seed("networkpolicies", fixture("networkpolicies.json"), group="networking.k8s.io")
    return api


def token_file(tmp_path):
    path = tmp_path / "token"
    path.write_text(SA_TOKEN + "\n")
    return str(path)


def watches(api, resource):
    return [r for r in api.requests if r.resource == resource and r.verb == "watch"]


async def until(cond, timeout=5.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


# ---- the reflector (no I/O) ---------------------------------------------------------------

def test_reflector_list_diff_and_events():
    r = Reflector("Pod")
    changes = r.on_list({"metadata": {"resourceVersion": "5"}, "items": [pod("a", "10.32.0.1"), pod("b", "10.32.0.2")]})
    assert [k for k, _ in changes] == ["kube/Pod/pod-a", "kube/Pod/pod-b"] and r.resource_version == "5"
    assert r.on_list({"metadata": {"resourceVersion": "6"}, "items": [pod("b", "10.32.0.2")]}) == [("kube/Pod/pod-a", [])]
    [(key, [obj])] = r.on_event({"type": "MODIFIED", "object": pod("b", "10.32.0.2", rv="7", app="x")})
    assert obj.metadata.labels == {"app": "x"} and r.resource_version == "7"
    assert r.on_event({"type": "MODIFIED", "object": pod("b", "10.32.0.2", rv="8", app="x")}) == [], "no change"
    assert r.on_event({"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}}) == []
    assert r.resource_version == "9"
    assert r.on_event({"type": "DELETED", "object": pod("b", "10.32.0.2", rv="10")}) == [("kube/Pod/pod-b", [])]
    assert r.on_event({"type": "DELETED", "object": pod("b", "10.32.0.2", rv="11")}) == []
    with pytest.raises(Gone):
        r.on_event({"type": "ERROR", "object": {"code": 410, "message": "too old resource version"}})
    for bad in ({"type": "ERROR", "object": {"code": 500}}, {"type": "SOMETHING", "object": pod("c", "1.2.3.4")},
                {"type": "ADDED"}):
        with pytest.raises(RemoteProtocolError):
            r.on_event(bad)
    assert r.on_event({"type": "ADDED", "object": {"metadata": {"name": "x", "labels": "no"}}}) == [], \
        "a malformed object is skipped"


# ---- the source against the fake server -------------------------------------------------------

async def test_list_watch_rewatch_relist_and_errors(tmp_path):
    api = seeded_api()
    api.fail_next = {("list", "pods"): 1}  # the first list of pods fails with a 500: retried
    url = await api.start()
    config = NpcSettings(kube_api=url, kube_token_file=token_file(tmp_path), kube_resync_s=60)
    controller = NetworkPolicyController()
    world = World(controller)

    async def on_change(key, objects):
        world.put(key, objects)

    source = KubeSource(config, on_change, backoff_start_s=0.01)
    task = asyncio.get_running_loop().create_task(source.run())
    web, db = ipset_name("default:app=web"), ipset_name("default:app=db")
    members = lambda name: set(controller.desired_state().ipsets[name].members)  # noqa: E731
    added, modified, bookmark, deleted = fixture("pods-watch.jsonl")
    try:
        await until(lambda: len(source.synced) == 3 and all(api.watchers[k] for k in api.watchers
                                                               if k[1] in ("pods", "namespaces", "networkpolicies")),
                    what="listed and watching")
        assert members(web) == {"10.32.0.1"}
        assert all(r.headers.get("Authorization") == f"Bearer {SA_TOKEN}" for r in api.requests)
        assert {r.status for r in api.requests if r.verb != "watch"} == {200, 500}, "RBAC allows what npc asks"

        api.replay([added])
        await until(lambda: members(db) == {"10.32.0.2"}, what="ADDED")
        api.replay([modified])
        await until(lambda: members(db) == set(), what="MODIFIED")
        api.replay([bookmark])
        await until(lambda: source.reflectors["Pod"].resource_version == "515")

        api.end_watches()  # the server ends every watch: we watch again from where we were
        await until(lambda: len(watches(api, "pods")) == 2, what="a second pod watch")
        assert watches(api, "pods")[-1].query["resourceVersion"] == "515"

        # gone while our resourceVersion got too old (a deletion we never saw): relist
        del api.objects[("", "pods")][("default", "web")]
        api.replay([deleted])
        api.version += 5
        api.compact("", "pods")
        api.end_watches()
        await until(lambda: members(web) == set() and source.reflectors["Pod"].resource_version == str(api.version),
                    what="relisted after 410")
        lists = [r for r in api.requests if r.resource == "pods" and r.verb == "list"]
        assert [r.status for r in lists] == [500, 200, 200], "first (500), second, and the relist"
        await until(lambda: watches(api, "pods")[-1].query["resourceVersion"] == str(api.version),
                    what="watching from the relist's resourceVersion")
    finally:
        task.cancel()
        await api.stop()


async def test_npc_service_enforces_kubernetes_policies(tmp_path):
    api = seeded_api()
    api.replay([fixture("pods-watch.jsonl")[0]])  # pod db (app=db)
    url = await api.start()
    kernel, broker = MemoryKernel(), MemoryBroker()
    bus = MemoryBus(broker, "npc")
    launch = LaunchConfig(state_dir=tmp_path, name="aa:00:00:00:00:01", nickname="h1")
    ctx = ServiceContext("npc", for_service("npc", launch), bus, new_registry(), RealClock(), HttpRouter())
    config = NpcSettings(resync_s=0.2, gossip_interval_s=5, persist_delay_s=0.01, kube_api=url,
                         kube_token_file=token_file(tmp_path))
    app = NpcApp(config, runner=kernel.run)
    await app.start(ctx)
    try:
        web = ipset_name("default:app=web")
        await until(lambda: web in kernel.sets and set(kernel.sets[web].members) == {"10.32.0.1"},
                    what="the API server's policy enforced")
        await bus.publish(subjects.event("containers"), ContainerEvent(
            kind="attached", container_id="c9", cidrs=("10.32.0.9/12",), labels={"app": "web"}))
        listing = await bus.request(subjects.request("npc", "list"), ListRequest(), ListReply)
        assert [(o.ref.name, o.source, o.enforced) for o in listing.objects] == [
            ("default", "kubernetes", True), ("np", "kubernetes", True)]
        np = api.get("networking.k8s.io", "networkpolicies", "np", "default")
        api.put("networking.k8s.io", "networkpolicies", np, event="DELETED")
        await until(lambda: web not in kernel.sets, what="policy deleted")
        assert app.status().pods == 2, "container events are not pods when Kubernetes is the source"
    finally:
        await app.stop()
        await bus.close()
        await api.stop()


@pytest.mark.parametrize("profile, env, backend, api, resync", [
    ("production", {}, None, None, 30.0),
    ("test", {"WEAVE_NPC_IPTABLES": "legacy"}, "legacy", None, 2.0),
    ("production", {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "6443"}, None,
     "https://10.96.0.1:6443", 30.0),
    ("production", {"WEAVE_NPC_KUBE_API": "http://127.0.0.1:8001", "KUBERNETES_SERVICE_HOST": "x"}, None,
     "http://127.0.0.1:8001", 30.0),
])
def test_config_from_profile_and_environment(profile, env, backend, api, resync):
    """What npc runs with: the profile's settings and the environment's (the test
    profile repairs every 2 s, production every 30 s)."""
    settings = for_service("npc", LaunchConfig(profile=profile), env).settings
    assert (settings.iptables_backend, settings.kube_api, settings.resync_s) == (backend, api, resync)
