"""Prometheus metrics of the router, with Weave Net's names and labels, read from the
core at scrape time (nothing to keep in sync)."""
from __future__ import annotations

from typing import Callable, Iterator

from shared.prom import CounterMetricFamily, GaugeMetricFamily, Metric

from services.gossip.connection import ConnState
from services.gossip.router import Router


class MeshCollector:
    def __init__(self, router: Callable[[], Router | None]) -> None:
        """`router`: the mesh router now (None before the service started)."""
        self.router = router

    def collect(self) -> Iterator[Metric]:
        router = self.router()
        conns = GaugeMetricFamily("weave_connections", "Number of peer-to-peer connections.",
                                  labels=["state", "type", "encryption"])
        counts: dict[tuple[str, str, str], int] = {}
        for overlay in (router.config.overlays if router else ()) or ("none",):
            for enc in ("", "yes"):  # Weave lists both encryption states, zeros included
                counts[("established", overlay, enc)] = 0
        for c in (router.conns.values() if router else ()):
            if c.remote is None:
                continue
            state = "established" if c.state is ConnState.ESTABLISHED else "pending"
            key = (state, c.overlay, "yes" if c.protocol.encrypted else "")
            counts[key] = counts.get(key, 0) + 1
        for labels, n in sorted(counts.items()):
            conns.add_metric(list(labels), n)
        yield conns
        term = CounterMetricFamily("weave_connection_terminations", "Number of peer-to-peer connections terminated.")
        term.add_metric([], router.maker.termination_count if router else 0)
        yield term
