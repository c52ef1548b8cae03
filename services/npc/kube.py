"""The Kubernetes API as a source of Namespaces, Pods and NetworkPolicies (weave-npc's
informers), through lightkube (shared/kube.py).

Per resource, `Reflector` (sans-I/O) holds what the API server said and turns a list
or a watch event into changes `(key, objects)` for World: a relist replaces
everything (objects gone from the list are removed), ADDED/MODIFIED replace one object,
DELETED removes it, BOOKMARK only moves the resourceVersion, and an ERROR 410 (Gone:
our resourceVersion is too old) asks for a relist. `KubeSource` is the shell: one
`shared.kube.reflect` task per resource (list, then lightkube's watch from the list's
resourceVersion, re-opened from the last one when the server ends it; a 410 or
repeated failures: list again; a full relist every `kube_resync_s`), feeding the
Reflectors. Auth is the in-cluster service account (bearer token, CA file) when those
files exist.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from lightkube.resources.core_v1 import Namespace, Pod
from lightkube.resources.networking_v1 import NetworkPolicy

from shared import kube
from shared.config import NpcSettings
from shared.errors import RemoteProtocolError

from .model import KubeObject, parse_object

log = logging.getLogger("weave.npc.kube")
BACKOFF_START_S, BACKOFF_MAX_S = 0.5, 30.0

Change = tuple[str, list[KubeObject]]


@dataclass(frozen=True)
class Resource:
    kind: str
    model: type             # lightkube's resource
    namespace: str | None   # "*": every namespace; None: a cluster resource


RESOURCES = (Resource("Namespace", Namespace, None), Resource("Pod", Pod, "*"),
             Resource("NetworkPolicy", NetworkPolicy, "*"))


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

class KubeSource:
    def __init__(self, settings: NpcSettings, on_change: Callable[[str, list[KubeObject]], Awaitable[None]],
                 backoff_start_s: float = BACKOFF_START_S) -> None:
        assert settings.kube_api
        self.settings, self.on_change = settings, on_change
        self.backoff = kube.Backoff(backoff_start_s, BACKOFF_MAX_S)
        self.reflectors = {r.kind: Reflector(r.kind) for r in RESOURCES}
        self.synced: set[str] = set()  # kinds listed at least once

    async def run(self) -> None:
        client = kube.make_client(kube.ApiConfig(self.settings.kube_api, self.settings.kube_token_file,
                                                 self.settings.kube_ca_file), field_manager="weave-npc")
        try:
            await asyncio.gather(*(kube.reflect(client, r.model, _Sink(self, r.kind), namespace=r.namespace,
                                                resync_s=self.settings.kube_resync_s, backoff=self.backoff)
                                   for r in RESOURCES))
        finally:
            await client.close()

    async def _apply(self, changes: list[Change]) -> None:
        for key, objects in changes:
            await self.on_change(key, objects)


class _Sink:
    """One resource's reflector events -> its Reflector -> World changes."""

    def __init__(self, source: KubeSource, kind: str) -> None:
        self.source, self.kind = source, kind
        self.reflector = source.reflectors[kind]

    async def on_list(self, items: list[dict[str, Any]], resource_version: str) -> None:
        changes = self.reflector.on_list({"metadata": {"resourceVersion": resource_version}, "items": items})
        await self.source._apply(changes)
        self.source.synced.add(self.kind)

    async def on_event(self, event_type: str, obj: dict[str, Any]) -> None:
        await self.source._apply(self.reflector.on_event({"type": event_type, "object": obj}))
