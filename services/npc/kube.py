"""The Kubernetes API as a source of Namespaces, Pods and NetworkPolicies (weave-npc's
informers), over plain HTTP/1.1: list, then watch from the list's resourceVersion.

Per resource, `Reflector` (sans-I/O) holds what the API server said and turns a list
or a watch event into changes `(key, objects)` for World: a relist replaces
everything (objects gone from the list are removed), ADDED/MODIFIED replace one object,
DELETED removes it, BOOKMARK only moves the resourceVersion, and an ERROR 410 (Gone:
our resourceVersion is too old) asks for a relist. `KubeSource` is the shell: one
task per resource looping list -> watch -> (stream ends: watch again from the last
resourceVersion | error: back off, relist), plus a full relist every `kube_resync_s`.
Auth is the in-cluster service account (bearer token, CA file) when those files exist.
"""
from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from shared.errors import RemoteProtocolError

from .config import NpcServiceConfig
from .model import KubeObject, parse_object

log = logging.getLogger("weave.npc.kube")
WATCH_TIMEOUT_S = 300  # the server ends a watch after this; we then watch again
MAX_LINE = 16 * 1024 * 1024
BACKOFF_START_S, BACKOFF_MAX_S = 0.5, 30.0

Change = tuple[str, list[KubeObject]]


@dataclass(frozen=True)
class Resource:
    kind: str
    path: str


RESOURCES = (Resource("Namespace", "/api/v1/namespaces"), Resource("Pod", "/api/v1/pods"),
             Resource("NetworkPolicy", "/apis/networking.k8s.io/v1/networkpolicies"))


class Gone(Exception):
    """The watch's resourceVersion is too old (410): relist."""


class Reflector:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.resource_version = ""
        self.objects: dict[str, KubeObject] = {}  # key -> object

    def key(self, raw: dict[str, Any]) -> str:
        meta = raw.get("metadata") or {}
        uid = meta.get("uid") or f"{meta.get('namespace', '')}/{meta.get('name', '')}"
        return f"kube/{self.kind}/{uid}"

    def on_list(self, body: dict[str, Any]) -> list[Change]:
        """A full list: every object now, and removals of those that are gone."""
        self.resource_version = str((body.get("metadata") or {}).get("resourceVersion", ""))
        seen: dict[str, KubeObject] = {}
        for raw in body.get("items") or []:
            obj = self._parse(raw)
            if obj is not None:
                seen[self.key(raw)] = obj
        changes = [(key, []) for key in self.objects if key not in seen]
        changes += [(key, [obj]) for key, obj in seen.items() if self.objects.get(key) != obj]
        self.objects = seen
        return changes

    def on_event(self, event: dict[str, Any]) -> list[Change]:
        """One watch event. Raises Gone for a 410, RemoteProtocolError for nonsense."""
        kind, raw = event.get("type"), event.get("object")
        if not isinstance(raw, dict):
            raise RemoteProtocolError(f"watch event without an object: {str(event)[:80]}", code="bad_watch")
        if kind == "ERROR":
            if raw.get("code") == 410:
                raise Gone(raw.get("message", "gone"))
            raise RemoteProtocolError(f"watch error: {raw.get('message', raw)}", code="bad_watch")
        self.resource_version = str((raw.get("metadata") or {}).get("resourceVersion", self.resource_version))
        if kind == "BOOKMARK":
            return []
        key = self.key(raw)
        if kind == "DELETED":
            return [(key, [])] if self.objects.pop(key, None) is not None else []
        if kind not in ("ADDED", "MODIFIED"):
            raise RemoteProtocolError(f"unknown watch event type {kind!r}", code="bad_watch")
        obj = self._parse(raw)
        if obj is None or self.objects.get(key) == obj:
            return []
        self.objects[key] = obj
        return [(key, [obj])]

    def _parse(self, raw: dict[str, Any]) -> KubeObject | None:
        try:
            return parse_object({**raw, "kind": self.kind})
        except RemoteProtocolError as exc:
            log.warning("ignoring a malformed %s from the API server: %s", self.kind, exc.message)
            return None


# ---- the shell ----------------------------------------------------------------------------

@dataclass
class Response:
    reader: asyncio.StreamReader
    chunked: bool
    length: int | None  # None: to EOF (or chunked)


class HttpError(Exception):
    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:200]}")
        self.status = status


class KubeSource:
    def __init__(self, config: NpcServiceConfig, on_change: Callable[[str, list[KubeObject]], Awaitable[None]],
                 backoff_start_s: float = BACKOFF_START_S) -> None:
        assert config.kube_api
        self.backoff_start_s = backoff_start_s
        url = urlsplit(config.kube_api)
        self.host, self.tls = url.hostname or "localhost", url.scheme == "https"
        self.port = url.port or (443 if self.tls else 80)
        self.config, self.on_change = config, on_change
        self.reflectors = {r.kind: Reflector(r.kind) for r in RESOURCES}
        self.synced: set[str] = set()  # kinds listed at least once

    async def run(self) -> None:
        await asyncio.gather(*(self._run_resource(r) for r in RESOURCES))

    async def _run_resource(self, resource: Resource) -> None:
        reflector = self.reflectors[resource.kind]
        backoff = self.backoff_start_s
        loop = asyncio.get_running_loop()
        while True:
            try:
                await self._apply(reflector.on_list(await self._get_json(resource.path)))
                self.synced.add(resource.kind)
                relist_at = loop.time() + self.config.kube_resync_s
                while loop.time() < relist_at:
                    await self._watch(resource, reflector, relist_at)
                    backoff = self.backoff_start_s
            except Gone:
                log.info("%s watch expired; listing again", resource.kind)
            except (OSError, HttpError, RemoteProtocolError, ValueError, asyncio.IncompleteReadError) as exc:
                log.warning("kubernetes %s: %s; retrying in %.1f s", resource.kind, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def _apply(self, changes: list[Change]) -> None:
        for key, objects in changes:
            await self.on_change(key, objects)

    async def _watch(self, resource: Resource, reflector: Reflector, until: float) -> None:
        timeout = max(1, min(WATCH_TIMEOUT_S, int(until - asyncio.get_running_loop().time())))
        query = {"watch": "1", "resourceVersion": reflector.resource_version, "allowWatchBookmarks": "true",
                 "timeoutSeconds": str(timeout)}
        resp, writer = await self._request(f"{resource.path}?{urlencode(query)}")
        try:
            async with asyncio.timeout(timeout + 30):
                async for line in _lines(resp):
                    await self._apply(reflector.on_event(json.loads(line)))
        except TimeoutError:
            pass  # a server that never ends its watch: start another
        finally:
            writer.close()

    async def _get_json(self, path: str) -> dict[str, Any]:
        resp, writer = await self._request(path)
        try:
            return json.loads(b"".join([chunk async for chunk in _lines(resp, split=False)]))
        finally:
            writer.close()

    async def _request(self, target: str) -> tuple[Response, asyncio.StreamWriter]:
        """Send a GET; return the stream positioned at the body once the status is 200."""
        ctx = self._ssl() if self.tls else None
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, ssl=ctx, limit=MAX_LINE), 10)
        headers = [f"GET {target} HTTP/1.1", f"Host: {self.host}", "Accept: application/json",
                   "User-Agent: weave-py-npc"]
        token = _read(self.config.kube_token_file)
        if token:
            headers.append(f"Authorization: Bearer {token}")
        writer.write(("\r\n".join(headers) + "\r\n\r\n").encode())
        status, chunked, length = await _response_head(reader)
        resp = Response(reader, chunked, length)
        if status != 200:
            body = b"".join([c async for c in _lines(resp, split=False)])
            writer.close()
            raise HttpError(status, body.decode(errors="replace"))
        return resp, writer

    def _ssl(self) -> ssl.SSLContext:
        ca = self.config.kube_ca_file
        return ssl.create_default_context(cafile=ca if Path(ca).exists() else None)


def _read(path: str) -> str:
    try:
        return Path(path).read_text().strip()
    except OSError:
        return ""


async def _response_head(reader: asyncio.StreamReader) -> tuple[int, bool, int | None]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
    parts = head[0].split(" ", 2)
    if len(parts) < 2 or not parts[1].isdigit():
        raise RemoteProtocolError(f"not an HTTP response: {head[0][:80]!r}", code="bad_http")
    fields = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in head[1:] if line)}
    chunked = "chunked" in fields.get("transfer-encoding", "").lower()
    length = int(fields["content-length"]) if "content-length" in fields and not chunked else None
    return int(parts[1]), chunked, length


async def _body(resp: Response):
    """The body's bytes as they come: chunked, by Content-Length, or to EOF."""
    reader = resp.reader
    if resp.chunked:
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return
            yield await reader.readexactly(size)
            await reader.readexactly(2)
    elif resp.length is not None:
        if resp.length:
            yield await reader.readexactly(resp.length)
    else:
        while data := await reader.read(1 << 16):
            yield data


async def _lines(resp: Response, split: bool = True):
    """Newline-delimited JSON documents of a watch (or, with split=False, raw chunks)."""
    buf = b""
    async for data in _body(resp):
        if not split:
            yield data
            continue
        buf += data
        if len(buf) > MAX_LINE:
            raise RemoteProtocolError("watch event larger than 16 MiB", code="bad_watch")
        *complete, buf = buf.split(b"\n")
        for line in complete:
            if line.strip():
                yield line
    if split and buf.strip():
        yield buf
