"""A Kubernetes API server for tests: the few resources weave-py uses, answered in the
real API's shapes from the objects of tests/fixtures/kubernetes (hand-written in those
shapes; see the README there), over real HTTP (aiohttp), so the real client library
(lightkube) is what talks to it.

What it does as the real one does:
- list (`{"kind": "<Kind>List", "metadata": {"resourceVersion"}, "items"}`) and watch
  (chunked newline-delimited `{"type", "object"}` events from a resourceVersion; an
  ERROR event with a 410 Status for a resourceVersion older than the last compaction;
  ADDED for every object when the watch names none; the stream ends at timeoutSeconds);
- get/create/update (PUT with metadata.resourceVersion: 409 Conflict when it is not the
  stored one)/delete/patch of nodes' status, with one resourceVersion counter for all;
- RBAC: a request with the service account's token may do only what the manifest's
  ClusterRole and Role grant (403 Forbidden otherwise); the admin token may do anything
  (the test's own `kubectl`); no token or another one: 401.
For tests it also: replays a recorded watch stream (`replay`), fails the next N requests
of a verb (`fail_next`), lets a hook change an object just before an update is checked
(`before_update`: another node writing first), and logs every request.

`python -m tests.kube_api --listen 192.168.77.200:6443 ...` runs it as a process (the
e2e tests serve it on a testbed's underlay).
"""
from __future__ import annotations

import argparse
import asyncio
import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "kubernetes"
MANIFEST = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes" / "weave-daemonset.yaml"
SA_TOKEN, ADMIN_TOKEN = "weave-net-sa-token", "admin-token"
KINDS = {("", "nodes"): ("Node", "v1"), ("", "namespaces"): ("Namespace", "v1"), ("", "pods"): ("Pod", "v1"),
         ("", "configmaps"): ("ConfigMap", "v1"),
         ("networking.k8s.io", "networkpolicies"): ("NetworkPolicy", "networking.k8s.io/v1")}
NAMESPACED = {"pods", "configmaps", "networkpolicies"}


def fixture(name: str) -> Any:
    path = FIXTURES / name
    if path.suffix == ".jsonl":
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return json.loads(path.read_text())


def status(which: str, name: str | None = None) -> dict:
    """A Status body of statuses.json, with the object's name put in."""
    body = copy.deepcopy(fixture("statuses.json")[which])
    if name and "details" in body:
        body["message"] = body["message"].replace('"weave-net"', f'"{name}"')
        body["details"]["name"] = name
    return body


@dataclass
class Target:
    """What one request is about, as RBAC sees it."""
    verb: str
    group: str
    resource: str
    subresource: str
    namespace: str | None
    name: str | None


@dataclass
class Logged:
    method: str
    path: str
    query: dict[str, str]
    verb: str
    resource: str
    status: int
    user: str
    headers: dict[str, str] = field(default_factory=dict)


def rbac_rules(manifest: Path = MANIFEST) -> tuple[list[dict], list[dict]]:
    """(cluster-wide rules, kube-system rules) granted to the weave-net service account."""
    docs = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    bound = {(d["roleRef"]["kind"], d["roleRef"]["name"]) for d in docs
             if d["kind"] in ("ClusterRoleBinding", "RoleBinding")
             and any(s.get("name") == "weave-net" and s.get("namespace") == "kube-system" for s in d["subjects"])}
    cluster = [r for d in docs if d["kind"] == "ClusterRole" and ("ClusterRole", d["metadata"]["name"]) in bound
               for r in d["rules"]]
    local = [r for d in docs if d["kind"] == "Role" and ("Role", d["metadata"]["name"]) in bound
             and d["metadata"]["namespace"] == "kube-system" for r in d["rules"]]
    return cluster, local


def allowed(rules: list[dict], t: Target) -> bool:
    res = f"{t.resource}/{t.subresource}" if t.subresource else t.resource
    for r in rules:
        if t.group in r.get("apiGroups", []) and res in r.get("resources", []) and t.verb in r.get("verbs", []):
            names = r.get("resourceNames")
            if not names or (t.name is not None and t.name in names):
                return True
    return False


class FakeKubeApi:
    def __init__(self, manifest: Path = MANIFEST, log_file: Path | None = None) -> None:
        self.version = 0  # the last resourceVersion given (one counter for all, as etcd's revision)
        self.objects: dict[tuple[str, str], dict[tuple[str | None, str], dict]] = {k: {} for k in KINDS}
        self.history: dict[tuple[str, str], list[tuple[int, str, dict]]] = {k: [] for k in KINDS}
        self.compacted: dict[tuple[str, str], int] = {k: 0 for k in KINDS}
        self.watchers: dict[tuple[str, str], set[asyncio.Queue]] = {k: set() for k in KINDS}
        self.cluster_rules, self.local_rules = rbac_rules(manifest)
        self.requests: list[Logged] = []
        self.fail_next: dict[tuple[str, str], int] = {}   # (verb, resource) -> requests to answer 500
        self.before_update: Callable[[dict], None] | None = None
        self.log_file = log_file
        self.runner: web.AppRunner | None = None
        self.closing = False

    # -- state -------------------------------------------------------------------------
    def seed(self, resource: str, body: dict, group: str = "") -> None:
        """Objects of a list fixture become stored objects, with their resourceVersions."""
        for item in body["items"]:
            self.put(group, resource, item, keep_version=True)
        self.version = max(self.version, int(body["metadata"]["resourceVersion"]))

    def put(self, group: str, resource: str, obj: dict, event: str | None = None, keep_version: bool = False) -> dict:
        """Store (or with event DELETED remove) an object; watchers get the event."""
        obj = copy.deepcopy(obj)
        kind, api_version = KINDS[(group, resource)]
        obj.setdefault("kind", kind)
        obj.setdefault("apiVersion", api_version)
        meta = obj.setdefault("metadata", {})
        given = int(meta.get("resourceVersion") or 0)
        self.version = given if keep_version and given > self.version else self.version + 1
        meta["resourceVersion"] = str(self.version)
        key = (meta.get("namespace"), meta["name"])
        store = self.objects[(group, resource)]
        event = event or ("MODIFIED" if key in store else "ADDED")
        if event == "DELETED":
            store.pop(key, None)
        else:
            meta.setdefault("uid", f"uid-{resource}-{meta['name']}")
            meta.setdefault("creationTimestamp", "2024-05-02T09:00:00Z")
            store[key] = obj
        self.history[(group, resource)].append((int(meta["resourceVersion"]), event, obj))
        for q in self.watchers[(group, resource)]:
            q.put_nowait({"type": event, "object": obj})
        return obj

    def replay(self, events: list[dict], group: str = "") -> None:
        """A recorded watch stream: each event applied in order (its object's
        resourceVersion kept if it is later than ours, else the next one: versions only
        grow), so lists and watches agree with it."""
        for ev in events:
            if ev["type"] == "BOOKMARK":  # carries the current resourceVersion, or the recorded one if later
                ev = copy.deepcopy(ev)
                meta = ev["object"]["metadata"]
                self.version = max(self.version, int(meta["resourceVersion"]))
                meta["resourceVersion"] = str(self.version)
                for q in self.watchers[(group, _resource_of(ev["object"]["kind"]))]:
                    q.put_nowait(ev)
                continue
            resource = _resource_of(ev["object"]["kind"])
            self.put(group, resource, ev["object"], event=ev["type"], keep_version=True)

    def compact(self, group: str, resource: str) -> None:
        """Forget the history: a watch from any resourceVersion up to now gets 410 Gone."""
        self.compacted[(group, resource)] = self.version
        self.history[(group, resource)].clear()

    def end_watches(self) -> None:
        for queues in self.watchers.values():
            for q in queues:
                q.put_nowait(None)

    def get(self, group: str, resource: str, name: str, namespace: str | None = None) -> dict | None:
        return self.objects[(group, resource)].get((namespace, name))

    def count(self, verb: str, resource: str, status: int | None = None) -> int:
        return sum(1 for r in self.requests if r.verb == verb and r.resource == resource
                   and (status is None or r.status == status))

    # -- HTTP --------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{path:.*}", self._handle)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self.runner = web.AppRunner(self.app(), handle_signals=False, shutdown_timeout=0.1)
        await self.runner.setup()
        site = web.TCPSite(self.runner, host, port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        return f"http://{host}:{port}"

    async def stop(self) -> None:
        self.closing = True  # a watch that starts from now on ends at once
        self.end_watches()
        if self.runner is not None:
            await self.runner.cleanup()

    async def _handle(self, req: web.Request) -> web.StreamResponse:
        query = dict(req.query)
        target = _target(req.method, req.path, query)
        user = self._user(req.headers.get("Authorization", ""))
        logged = Logged(req.method, req.path, query, target.verb if target else "?",
                        target.resource if target else "?", 0, user, dict(req.headers))
        self.requests.append(logged)  # at once: a test sees a watch while it is open
        code, resp = self._refuse(target, user)
        if resp is None:
            try:
                code, resp = await self._serve(req, target, query)
            except (ConnectionError, asyncio.CancelledError):
                code, resp = 499, None
        logged.status = code
        if self.log_file is not None:
            with self.log_file.open("a") as f:
                f.write(json.dumps({k: v for k, v in logged.__dict__.items() if k != "headers"}) + "\n")
        return resp if resp is not None else web.Response(status=499)

    def _user(self, auth: str) -> str:
        token = auth.removeprefix("Bearer ").strip()
        return {SA_TOKEN: "weave-net", ADMIN_TOKEN: "admin"}.get(token, "anonymous")

    def _refuse(self, t: Target | None, user: str) -> tuple[int, web.StreamResponse | None]:
        if t is None:
            return 404, _json(404, {**status("not-found"), "message": "the server could not find the requested resource"})
        if user == "anonymous":
            return 401, _json(401, status("unauthorized"))
        if user == "weave-net":
            rules = self.cluster_rules + (self.local_rules if t.namespace == "kube-system" else [])
            if not allowed(rules, t):
                body = status("forbidden", name=t.name or "")
                body["message"] = (f"{t.resource} is forbidden: User \"system:serviceaccount:kube-system:weave-net\" "
                                   f"cannot {t.verb} resource \"{t.resource}\"")
                return 403, _json(403, body)
        if self.fail_next.get((t.verb, t.resource)):
            self.fail_next[(t.verb, t.resource)] -= 1
            return 500, _json(500, status("internal"))
        return 0, None

    async def _serve(self, req: web.Request, t: Target, query: dict[str, str]) -> tuple[int, web.StreamResponse]:
        key = (t.group, t.resource)
        if t.verb == "list":
            return 200, self._list(key, t.namespace)
        if t.verb == "watch":
            return 200, await self._watch(req, key, t.namespace, query)
        if t.verb == "get":
            obj = self.get(t.group, t.resource, t.name, t.namespace)
            return (200, _json(200, obj)) if obj else (404, _json(404, status("not-found", name=t.name)))
        if t.verb == "create":
            obj = await req.json()
            obj.setdefault("metadata", {}).setdefault("namespace", t.namespace)
            if self.get(t.group, t.resource, obj["metadata"]["name"], t.namespace):
                return 409, _json(409, status("already-exists", name=obj["metadata"]["name"]))
            obj["metadata"].pop("resourceVersion", None)
            return 201, _json(201, self.put(t.group, t.resource, obj, event="ADDED"))
        if t.verb == "update":
            return self._update(t, await req.json())
        if t.verb == "delete":
            obj = self.get(t.group, t.resource, t.name, t.namespace)
            if obj is None:
                return 404, _json(404, status("not-found", name=t.name))
            return 200, _json(200, self.put(t.group, t.resource, obj, event="DELETED"))
        if t.verb == "patch" and t.subresource == "status":
            return self._patch_status(t, await req.json())
        return 405, _json(405, {**status("internal"), "code": 405, "reason": "MethodNotAllowed"})

    def _list(self, key: tuple[str, str], namespace: str | None) -> web.Response:
        kind, api_version = KINDS[key]
        items = [_as_item(o) for (ns, _), o in sorted(self.objects[key].items(), key=lambda kv: kv[0][1])
                 if namespace is None or ns == namespace]
        return _json(200, {"kind": f"{kind}List", "apiVersion": api_version,
                           "metadata": {"resourceVersion": str(self.version)}, "items": items})

    async def _watch(self, req: web.Request, key: tuple[str, str], namespace: str | None,
                     query: dict[str, str]) -> web.StreamResponse:
        queue: asyncio.Queue = asyncio.Queue()
        self.watchers[key].add(queue)  # before any await: end_watches() must reach every watch
        if self.closing:
            queue.put_nowait(None)
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.enable_chunked_encoding()
        since = query.get("resourceVersion") or ""
        try:
            await resp.prepare(req)
            if since not in ("", "0") and int(since) < self.compacted[key]:
                expired = fixture("watch-expired.json")
                expired["object"]["message"] = f"too old resource version: {since} ({self.compacted[key]})"
                await _send(resp, expired)
                return resp
            if since in ("", "0"):
                backlog = [{"type": "ADDED", "object": o} for o in self.objects[key].values()]
            else:
                backlog = [{"type": e, "object": o} for v, e, o in self.history[key] if v > int(since)]
            for ev in backlog:
                await _send(resp, ev)
            sent = max([_version_of(ev) for ev in backlog] + [int(since or 0)])
            timeout = float(query.get("timeoutSeconds") or 1800)
            deadline = time.monotonic() + timeout
            while (left := deadline - time.monotonic()) > 0:
                try:
                    ev = await asyncio.wait_for(queue.get(), left)
                except TimeoutError:
                    break
                if ev is None:
                    break
                if _version_of(ev) <= sent:  # queued while the backlog went out: sent already
                    continue
                if namespace is None or ev["object"].get("metadata", {}).get("namespace") in (None, namespace):
                    await _send(resp, ev)
            return resp
        finally:
            self.watchers[key].discard(queue)

    def _update(self, t: Target, body: dict) -> tuple[int, web.Response]:
        stored = self.get(t.group, t.resource, t.name, t.namespace)
        if stored is None:
            return 404, _json(404, status("not-found", name=t.name))
        if self.before_update is not None:
            hook, self.before_update = self.before_update, None
            hook(stored)
            stored = self.get(t.group, t.resource, t.name, t.namespace)
        if body.get("metadata", {}).get("resourceVersion") != stored["metadata"]["resourceVersion"]:
            return 409, _json(409, status("conflict", name=t.name))
        body["metadata"]["uid"] = stored["metadata"]["uid"]
        return 200, _json(200, self.put(t.group, t.resource, body, event="MODIFIED"))

    def _patch_status(self, t: Target, patch: dict) -> tuple[int, web.Response]:
        """Strategic merge of status.conditions by type (what kube-utils' set-node-status sends)."""
        node = self.get(t.group, t.resource, t.name, t.namespace)
        if node is None:
            return 404, _json(404, status("not-found", name=t.name))
        node = copy.deepcopy(node)
        conditions = {c["type"]: c for c in node.setdefault("status", {}).get("conditions", [])}
        for c in patch.get("status", {}).get("conditions", []):
            conditions[c["type"]] = {**conditions.get(c["type"], {}), **c}
        node["status"]["conditions"] = list(conditions.values())
        return 200, _json(200, self.put(t.group, t.resource, node, event="MODIFIED"))


def _version_of(event: dict) -> int:
    return int(event["object"].get("metadata", {}).get("resourceVersion") or 0)


def _resource_of(kind: str) -> str:
    return next(r for (_, r), (k, _) in KINDS.items() if k == kind)


def _as_item(obj: dict) -> dict:
    """List items carry no kind/apiVersion (the list does)."""
    return {k: v for k, v in obj.items() if k not in ("kind", "apiVersion")}


def _json(code: int, body: Any) -> web.Response:
    """Content-Type exactly `application/json`, as the API server sends it (no charset)."""
    return web.Response(status=code, body=json.dumps(body).encode(), headers={"Content-Type": "application/json"})


async def _send(resp: web.StreamResponse, event: dict) -> None:
    await resp.write(json.dumps(event).encode() + b"\n")


def _target(method: str, path: str, query: dict[str, str]) -> Target | None:
    parts = [p for p in path.split("/") if p]
    if len(parts) >= 2 and parts[0] == "api":
        group, rest = "", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, rest = parts[1], parts[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest or (group, rest[0]) not in KINDS:
        return None
    resource, name = rest[0], rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else ""
    if method == "GET":
        verb = "get" if name else ("watch" if query.get("watch") in ("1", "true") else "list")
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(method, "?")
    return Target(verb, group, resource, sub, namespace, name)


# ---- as a process (e2e) ---------------------------------------------------------------------

async def _serve_forever(args: argparse.Namespace) -> None:
    api = FakeKubeApi(log_file=Path(args.log) if args.log else None)
    if args.nodes:
        api.seed("nodes", json.loads(Path(args.nodes).read_text()))
    host, _, port = args.listen.rpartition(":")
    url = await api.start(host, int(port))
    print(url, flush=True)
    await asyncio.Event().wait()


def main() -> None:
    p = argparse.ArgumentParser(description="a fake Kubernetes API server seeded from fixtures")
    p.add_argument("--listen", required=True, help="host:port")
    p.add_argument("--nodes", help="a NodeList fixture to start with")
    p.add_argument("--log", help="append one JSON line per request to this file")
    asyncio.run(_serve_forever(p.parse_args()))


if __name__ == "__main__":
    main()
