"""The Kubernetes source against a small in-test API server speaking list/watch over
HTTP/1.1 (chunked watch streams, Content-Length lists): list then watch, events,
bookmarks, re-watch from the last resourceVersion, 410 -> relist, HTTP errors retried,
the bearer token; and an npc service taking its policies and pods from it."""
from __future__ import annotations

import asyncio
import json
import time
from dataclasses import replace
from urllib.parse import parse_qs, urlsplit

import pytest

from services.npc.config import NpcServiceConfig
from services.npc.kube import Gone, KubeSource, Reflector
from services.npc.memory_netfilter import MemoryKernel
from services.npc.policy import NetworkPolicyController
from services.npc.service import NpcApp
from services.npc.shortname import ipset_name
from services.npc.world import World
from shared import subjects
from shared.bus import MemoryBroker, MemoryBus
from shared.clock import RealClock
from shared.config import LaunchConfig, for_service
from shared.errors import RemoteProtocolError
from shared.http import Router
from shared.metrics import new_registry
from shared.schemas.datapath import ContainerEvent
from shared.schemas.npc import ListReply, ListRequest
from shared.service import ServiceContext

PATHS = {"Namespace": "/api/v1/namespaces", "Pod": "/api/v1/pods",
         "NetworkPolicy": "/apis/networking.k8s.io/v1/networkpolicies"}


def ns(name, rv="1", **labels):
    return {"metadata": {"name": name, "uid": f"ns-{name}", "resourceVersion": rv, "labels": labels}}


def pod(name, ip, rv="1", namespace="default", **labels):
    return {"metadata": {"name": name, "namespace": namespace, "uid": f"pod-{name}", "resourceVersion": rv,
                         "labels": labels}, "status": {"podIP": ip, "phase": "Running"}}


def netpol(name, rv="1"):
    return {"metadata": {"name": name, "namespace": "default", "uid": f"np-{name}", "resourceVersion": rv},
            "spec": {"podSelector": {"matchLabels": {"app": "web"}},
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"app": "db"}}}]}]}}


class FakeApiServer:
    """Lists from `items`; each watch streams what `push` queues, ends on `end_watches`."""

    def __init__(self) -> None:
        self.items = {kind: {} for kind in PATHS}
        self.rv = {kind: 10 for kind in PATHS}
        self.requests: list[tuple[str, dict, dict]] = []  # (path, query, headers)
        self.watchers: dict[str, list[asyncio.Queue]] = {kind: [] for kind in PATHS}
        self.gone_below = 0
        self.fail_lists: dict[str, int] = {}  # kind -> lists to answer with a 500

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def stop(self) -> None:
        self.end_watches()
        self.server.close()

    def push(self, kind: str, event_type: str, obj: dict) -> None:
        for q in self.watchers[kind]:
            q.put_nowait({"type": event_type, "object": obj})

    def end_watches(self) -> None:
        for queues in self.watchers.values():
            for q in queues:
                q.put_nowait(None)

    async def _handle(self, reader, writer) -> None:
        try:
            await self._serve(reader, writer)
        except (asyncio.CancelledError, ConnectionError, asyncio.IncompleteReadError):
            pass  # the test is over, or the client went away

    async def _serve(self, reader, writer) -> None:
        head = (await reader.readuntil(b"\r\n\r\n")).decode().split("\r\n")
        url = urlsplit(head[0].split()[1])
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        headers = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:] if h)}
        self.requests.append((url.path, query, headers))
        kind = next(k for k, p in PATHS.items() if p == url.path)
        try:
            if query.get("watch"):
                await self._watch(kind, query, writer)
            else:
                await self._list(kind, writer)
        finally:
            writer.close()

    async def _list(self, kind, writer) -> None:
        if self.fail_lists.get(kind):
            self.fail_lists[kind] -= 1
            body = b'{"kind": "Status", "code": 500}'
            writer.write(b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
            return
        body = json.dumps({"kind": f"{kind}List", "metadata": {"resourceVersion": str(self.rv[kind])},
                           "items": list(self.items[kind].values())}).encode()
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(body), body))

    async def _watch(self, kind, query, writer) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        if int(query.get("resourceVersion") or 0) < self.gone_below:
            self._chunk(writer, {"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}})
        else:
            q: asyncio.Queue = asyncio.Queue()
            self.watchers[kind].append(q)
            while (event := await q.get()) is not None:
                self._chunk(writer, event)
                await writer.drain()
            self.watchers[kind].remove(q)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    @staticmethod
    def _chunk(writer, event) -> None:
        data = json.dumps(event).encode() + b"\n"
        half = len(data) // 2  # split one event over two chunks: the client must rejoin them
        for part in (data[:half], data[half:]):
            writer.write(b"%x\r\n%s\r\n" % (len(part), part))


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
    api = FakeApiServer()
    api.items["Namespace"]["default"] = ns("default")
    api.items["Pod"]["web"] = pod("web", "10.32.0.1", app="web")
    api.items["NetworkPolicy"]["np"] = netpol("np")
    api.fail_lists = {"Pod": 1}  # the first list of pods fails with a 500: retried
    url = await api.start()
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    config = NpcServiceConfig(kube_api=url, kube_token_file=str(token), kube_resync_s=60)
    controller = NetworkPolicyController()
    world = World(controller)

    async def on_change(key, objects):
        world.put(key, objects)

    source = KubeSource(config, on_change, backoff_start_s=0.01)
    task = asyncio.get_running_loop().create_task(source.run())
    web, db = ipset_name("default:app=web"), ipset_name("default:app=db")
    members = lambda name: set(controller.desired_state().ipsets[name].members)  # noqa: E731
    try:
        await until(lambda: len(source.synced) == 3 and all(api.watchers.values()), what="listed and watching")
        assert members(web) == {"10.32.0.1"}
        assert all(h.get("authorization") == "Bearer s3cret" for _, _, h in api.requests)

        api.push("Pod", "ADDED", pod("db", "10.32.0.2", rv="11", app="db"))
        await until(lambda: members(db) == {"10.32.0.2"}, what="ADDED")
        api.push("Pod", "MODIFIED", pod("db", "10.32.0.2", rv="12", app="other"))
        await until(lambda: members(db) == set(), what="MODIFIED")
        api.push("Pod", "BOOKMARK", {"metadata": {"resourceVersion": "15"}})
        await until(lambda: source.reflectors["Pod"].resource_version == "15")

        api.end_watches()  # the server ends every watch: we watch again from where we were
        await until(lambda: sum(1 for p, q, _ in api.requests if p == PATHS["Pod"] and q.get("watch")) == 2)
        rewatch = [q for p, q, _ in api.requests if p == PATHS["Pod"] and q.get("watch")][-1]
        assert rewatch["resourceVersion"] == "15"

        del api.items["Pod"]["web"]  # gone while our resourceVersion got too old: relist
        api.gone_below = 100
        api.rv["Pod"] = 120
        api.push("Pod", "DELETED", pod("db", "10.32.0.2", rv="16"))
        api.end_watches()
        await until(lambda: members(web) == set() and source.reflectors["Pod"].resource_version == "120",
                    what="relisted after 410")
        lists = [p for p, q, _ in api.requests if p == PATHS["Pod"] and not q.get("watch")]
        assert len(lists) == 3, "first (500), second, and the relist"
    finally:
        task.cancel()
        await api.stop()


async def test_npc_service_enforces_kubernetes_policies(tmp_path):
    api = FakeApiServer()
    api.items["Namespace"]["default"] = ns("default")
    api.items["Pod"]["web"] = pod("web", "10.32.0.1", app="web")
    api.items["Pod"]["db"] = pod("db", "10.32.0.2", app="db")
    api.items["NetworkPolicy"]["np"] = netpol("np")
    url = await api.start()
    kernel, broker = MemoryKernel(), MemoryBroker()
    bus = MemoryBus(broker, "npc")
    launch = LaunchConfig(state_dir=tmp_path, name="aa:00:00:00:00:01", nickname="h1")
    ctx = ServiceContext("npc", for_service("npc", launch), bus, new_registry(), RealClock(), Router())
    config = replace(NpcServiceConfig(resync_interval_s=0.2, gossip_interval_s=5, persist_delay_s=0.01),
                     kube_api=url, kube_token_file=str(tmp_path / "none"))
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
        api.push("NetworkPolicy", "DELETED", netpol("np", rv="20"))
        await until(lambda: web not in kernel.sets, what="policy deleted")
        assert app.status().pods == 2, "container events are not pods when Kubernetes is the source"
    finally:
        await app.stop()
        await bus.close()
        await api.stop()


@pytest.mark.parametrize("profile, env, backend, api, resync", [
    ("production", {}, None, None, 30.0),
    ("test", {"WEAVE_NPC_IPTABLES": "legacy"}, "legacy", None, 1.0),
    ("production", {"KUBERNETES_SERVICE_HOST": "10.96.0.1", "KUBERNETES_SERVICE_PORT": "6443"}, None,
     "https://10.96.0.1:6443", 30.0),
    ("production", {"WEAVE_NPC_KUBE_API": "http://127.0.0.1:8001", "KUBERNETES_SERVICE_HOST": "x"}, None,
     "http://127.0.0.1:8001", 30.0),
])
def test_config_from_profile_and_environment(profile, env, backend, api, resync):
    config = NpcServiceConfig.for_profile(profile, env)
    assert (config.backend.value if config.backend else None, config.kube_api, config.resync_interval_s) == \
        (backend, api, resync)
