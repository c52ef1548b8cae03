"""The app's report window (Scope's app/collector.go), sans-I/O: reports and `now` in,
the merged report and its render out.

Every probe's reports are kept for `window_s` after they arrive (the app's clock, not
the probe's: probes' clocks may be off) and merged into one report. The merge and its
render are cached until a report arrives or one ages out, so all readers between two
changes share one render. `generation` counts changes (websockets use it to tell a new
state from an old one).

Bounds: at most `max_reports_per_probe` reports per probe (the oldest go first; a
probe publishes every 3 s, so 15 s holds 5) and `max_probes` probes (the one heard from
least recently goes first).
"""
from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass

from services.scope.app.render.api import ReportRender
from services.scope.app.render.view import from_report
from services.scope.report import Report, merge_reports

NS = 1_000_000_000


@dataclass(frozen=True)
class ProbeInfo:
    """What the app knows of a probe from how its reports arrived (headers, mesh header)."""

    probe_id: str
    host: str
    version: str
    last_seen: float
    """App clock (seconds) of its last report."""


class Collector:
    def __init__(self, window_s: float = 15.0, *, max_reports_per_probe: int = 64, max_probes: int = 1024,
                 rng: random.Random | None = None) -> None:
        self.window_s = window_s
        self.max_reports_per_probe = max_reports_per_probe
        self.max_probes = max_probes
        self._rng = rng or random.Random()
        self._reports: dict[str, deque[tuple[float, Report]]] = {}
        self._probes: dict[str, ProbeInfo] = {}
        self._merged: Report | None = None
        self._render: ReportRender | None = None
        self.generation = 0

    def add(self, report: Report, now: float, probe_id: str, host: str = "", version: str = "") -> None:
        """A report arrived at `now` (seconds, the app's clock) from `probe_id`."""
        kept = self._reports.get(probe_id)
        if kept is None:
            if len(self._reports) >= self.max_probes:
                self._forget(min(self._probes.values(), key=lambda p: p.last_seen).probe_id)
            kept = self._reports[probe_id] = deque(maxlen=self.max_reports_per_probe)
        kept.append((now, report))
        self._probes[probe_id] = ProbeInfo(probe_id, host, version, now)
        self._changed()

    def report(self, now: float) -> Report:
        """The merge of every report within the window (cached until something changes).
        Its window is the sum of its reports' (as Scope's), its ID fresh."""
        self._expire(now)
        if self._merged is None:
            reports = [r for kept in self._reports.values() for _, r in kept]
            merged = merge_reports(reports) if reports else Report.make(0, "0")
            merged.window = sum(r.window for r in reports)
            merged.id = str(self._rng.getrandbits(63))
            self._merged = merged
        return self._merged

    def render(self, now: float) -> ReportRender:
        """The render of `report(now)`, shared until the report changes."""
        merged = self.report(now)
        if self._render is None:
            self._render = ReportRender(from_report(merged))
        return self._render

    def probes(self, now: float) -> list[ProbeInfo]:
        """Probes with a report in the window, most recently heard first."""
        self._expire(now)
        return sorted(self._probes.values(), key=lambda p: -p.last_seen)

    def next_expiry(self) -> float | None:
        """When the oldest report leaves the window (None: no reports)."""
        oldest = [kept[0][0] for kept in self._reports.values() if kept]
        return min(oldest) + self.window_s if oldest else None

    def _expire(self, now: float) -> None:
        horizon = now - self.window_s
        for probe_id, kept in list(self._reports.items()):
            expired = False
            while kept and kept[0][0] <= horizon:
                kept.popleft()
                expired = True
            if not kept:
                self._forget(probe_id)
            elif expired:
                self._changed()

    def _forget(self, probe_id: str) -> None:
        self._reports.pop(probe_id, None)
        self._probes.pop(probe_id, None)
        self._changed()

    def _changed(self) -> None:
        self._merged = None
        self._render = None
        self.generation += 1
