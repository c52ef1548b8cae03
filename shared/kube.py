"""The Kubernetes API through lightkube, for the processes that read it: npc (Namespaces,
Pods, NetworkPolicies) and kube-peers (Nodes, the `weave-net` ConfigMap).

`ApiConfig` says where the API server is and how we authenticate (in a pod: the service
account's token file, re-read by lightkube when the kubelet rotates it, and its CA);
`make_client` builds lightkube's AsyncClient from it.

`reflect(client, resource, sink)` is an informer's reflector: list, hand the list to the
sink, then watch from the list's resourceVersion and hand over every event. lightkube's
watch re-opens the stream from the last resourceVersion it saw whenever the server ends
it (`server_timeout`), and asks `on_watch_error` what to do when a stream fails:
- 410 Gone (our resourceVersion was compacted away): stop, and we list again. (lightkube
  could watch again "from now" instead, but that sends ADDED for what exists and never
  DELETED for what went while we were away; a list lets the sink see the difference.)
- anything else: lightkube retries the watch from the same resourceVersion after our
  backoff, up to WATCH_RETRIES times; then we back off and list again.
Every `resync_s` we list again anyway (bounded staleness whatever the watch missed).
The sink gets plain dicts in the API's JSON shape (`to_dict()` of lightkube's models).
"""
from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, Protocol

from lightkube import ApiError, AsyncClient, KubeConfig
from lightkube.config.models import Cluster, User
from lightkube.core.exceptions import NotReadyError
from lightkube.types import OnErrorAction, OnErrorResult

log = logging.getLogger("weave.kube")

SERVICE_ACCOUNT = "/var/run/secrets/kubernetes.io/serviceaccount"
WATCH_TIMEOUT_S = 300   # the server ends each watch after this; lightkube then watches again
WATCH_RETRIES = 3       # failed watch streams lightkube retries before we list again


@dataclass(frozen=True)
class ApiConfig:
    url: str                                           # https://host:port (or http:// in tests)
    token_file: str = f"{SERVICE_ACCOUNT}/token"       # bearer token; none sent if the file is missing
    ca_file: str = f"{SERVICE_ACCOUNT}/ca.crt"         # CA of the API server; system CAs if missing

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "ApiConfig | None":
        """WEAVE_KUBE_API (a URL) if set, else the in-cluster KUBERNETES_SERVICE_HOST/PORT
        that the kubelet gives every pod, else None (not in Kubernetes)."""
        env = os.environ if env is None else env
        url = env.get("WEAVE_KUBE_API")
        if not url and env.get("KUBERNETES_SERVICE_HOST"):
            host = env["KUBERNETES_SERVICE_HOST"]
            host = f"[{host}]" if ":" in host else host
            url = f"https://{host}:{env.get('KUBERNETES_SERVICE_PORT', '443')}"
        return cls(url) if url else None


def make_client(config: ApiConfig, field_manager: str = "weave-py") -> AsyncClient:
    """lightkube's client for `config` (proxy variables of the environment ignored: the
    API server is reached directly, as client-go's in-cluster config does; lightkube's
    10 s timeouts on every request but a watch's reads)."""
    ca = config.ca_file if Path(config.ca_file).exists() else None
    token = config.token_file if Path(config.token_file).exists() else None
    kube = KubeConfig.from_one(cluster=Cluster(server=config.url, certificate_auth=ca), user=User(token_file=token))
    return AsyncClient(kube, field_manager=field_manager, trust_env=False)


def is_gone(exc: BaseException) -> bool:
    """410 Gone, as a watch ERROR event (lightkube's ApiError) or as the HTTP status."""
    if isinstance(exc, ApiError):
        return exc.status.code == 410
    response = getattr(exc, "response", None)
    return response is not None and response.status_code == 410


def is_conflict(exc: BaseException) -> bool:
    """409 Conflict: an update with a stale resourceVersion, or a create of what exists."""
    return isinstance(exc, ApiError) and exc.status.code == 409


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, ApiError) and exc.status.code == 404


@dataclass(frozen=True)
class Backoff:
    start_s: float = 0.5   # first wait after a failure
    max_s: float = 30.0    # doubling stops here: a dead API server is tried every 30 s

    def delay(self, failures: int) -> float:
        return min(self.start_s * 2 ** max(0, failures - 1), self.max_s)


class Sink(Protocol):
    """Where a reflector's news goes. Both may raise: the reflector logs it, backs off
    and lists again."""

    async def on_list(self, items: list[dict[str, Any]], resource_version: str) -> None:
        """Every object now (an initial list, a relist after 410, or a resync)."""

    async def on_event(self, event_type: str, obj: dict[str, Any]) -> None:
        """ADDED, MODIFIED, DELETED (or BOOKMARK) of one object."""


async def reflect(client: AsyncClient, resource: type, sink: Sink, *, namespace: str | None = None,
                  resync_s: float = 300.0, backoff: Backoff = Backoff()) -> NoReturn:
    """List and watch `resource` (all namespaces with namespace="*") forever."""
    name = resource.__name__
    failures = 0

    def on_watch_error(exc: Exception, count: int) -> OnErrorResult:
        if is_gone(exc) or count > WATCH_RETRIES:
            return OnErrorResult(OnErrorAction.RAISE)
        log.info("%s watch failed (%s); lightkube watches again in %.1f s", name, exc, backoff.delay(count))
        return OnErrorResult(OnErrorAction.RETRY, sleep=backoff.delay(count))

    while True:
        try:
            listing = client.list(resource, namespace=namespace)
            items = [obj.to_dict() async for obj in listing]
            version = _list_version(listing)
            await sink.on_list(items, version)
            failures = 0
            async with asyncio.timeout(resync_s):
                async for event_type, obj in client.watch(resource, namespace=namespace, resource_version=version,
                                                          server_timeout=WATCH_TIMEOUT_S, on_error=on_watch_error):
                    await sink.on_event(event_type, obj.to_dict())
        except TimeoutError:
            log.debug("%s: resync", name)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the API server, the network or the sink: retried after a backoff
            if is_gone(exc):
                log.info("%s watch expired (410 Gone); listing again", name)
                continue
            failures += 1
            log.warning("kubernetes %s: %s: %s; listing again in %.1f s", name, type(exc).__name__, exc,
                        backoff.delay(failures))
            await asyncio.sleep(backoff.delay(failures))


def _list_version(listing: Any) -> str:
    """The list's resourceVersion ('' if the server gave none: the watch then starts
    from now, with an ADDED for every object)."""
    try:
        return listing.resourceVersion
    except NotReadyError:
        return ""
