"""Prometheus metrics: one registry per service process, served on 127.0.0.1.

`/metrics` is the text exposition format; `/healthz` answers 200 while the service is
healthy and 503 otherwise (for compose and Kubernetes probes). Metric names follow
Weave Net's where Weave has them (weave_connections, weave_ips, ...).
"""
from __future__ import annotations

from typing import Callable

from shared.prom import CONTENT_TYPE, CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector, generate_latest

from shared.http import HttpRouter, Request, Response


def new_registry() -> CollectorRegistry:
    """A registry with the process_/python_ collectors (Weave's has go_/process_)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry


def metrics_router(registry: CollectorRegistry, health: Callable[[], tuple[bool, str]]) -> HttpRouter:
    router = HttpRouter()

    async def metrics(_: Request) -> Response:
        return Response(200, generate_latest(registry), CONTENT_TYPE)

    async def healthz(_: Request) -> Response:
        ok, detail = health()
        return Response(200 if ok else 503, (detail or ("ok" if ok else "unhealthy")) + "\n")

    router.add("GET", "/metrics", metrics)
    router.add("GET", "/healthz", healthz)
    return router

