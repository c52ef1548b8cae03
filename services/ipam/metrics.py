"""Prometheus metrics of the ipam service, with Weave Net's names and help texts
(weave:prog/weaver/metrics.go), computed from the allocator's report at scrape time."""
from __future__ import annotations

from typing import Callable

from shared.prom import Collector, GaugeMetricFamily

from services.ipam import status
from services.ipam.allocator import Allocator


class IpamCollector(Collector):
    def __init__(self, allocator: Callable[[], Allocator | None]) -> None:
        self.allocator = allocator

    def collect(self):
        alloc = self.allocator()
        if alloc is None:
            return
        rep = status.report(alloc)
        ips = GaugeMetricFamily("weave_ips", "Number of IP addresses.", labels=["state"])
        ips.add_metric(["local-used"], rep["ActiveIPs"])
        yield ips
        yield GaugeMetricFamily("weave_max_ips", "Size of IP address space used by allocator.",
                                value=rep["RangeNumIPs"])
        count, percentage = status.unreachable(rep)
        yield GaugeMetricFamily("weave_ipam_unreachable_count", "Number of unreachable peers.", value=count)
        yield GaugeMetricFamily("weave_ipam_unreachable_percentage",
                                "Percentage of IP addresses owned  by unreachable peers.", value=percentage)
        yield GaugeMetricFamily("weave_ipam_pending_allocates", "Number of pending allocates.",
                                value=len(rep["PendingAllocates"] or ()))
        yield GaugeMetricFamily("weave_ipam_pending_claims", "Number of pending claims.",
                                value=len(rep["PendingClaims"] or ()))
