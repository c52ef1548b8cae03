"""What durable-before-acknowledged costs a weaveDNS add (issue 19).

One dns service in-process (the real DnsApp, its real journal in a state dir on this
machine's disk, the in-memory bus), `weave.dns.add` requests timed from the bus client
to the reply, sequentially and with 4 callers at once (client and service share one event loop here, so the 4-caller rows are bound by that loop's CPU); side by side in the same run:
- `journal (fsync)`: what runs in production: append + fsync before the reply;
- `journal, no fsync`: the same append without fsync (survives SIGKILL, not power loss);
- `memory only`: nothing written before the reply (the behaviour that lost names).

    .venv/bin/python -m bench.dns_durability [--adds 2000]
"""
from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from services.dns.config import DnsConfig
from services.dns.service import DnsApp
from shared import subjects
from shared.bus import MemoryBroker, MemoryBus
from shared.clock import RealClock
from shared.config import DnsSettings, LaunchConfig, ServiceConfig
from shared.durable import Journal
from shared.http import HttpRouter
from shared.metrics import new_registry
from shared.schemas.dns import AddRequest, ChangeReply
from shared.service import ServiceContext


class NoSyncJournal(Journal):
    def append(self, records) -> None:
        blob = b"".join(__import__("json").dumps(r, separators=(",", ":")).encode() + b"\n" for r in records)
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.write(self._fd, blob)


class NoJournal(Journal):
    def append(self, records) -> None:
        return None


async def run_variant(journal_cls, root: Path, adds: int, concurrency: int) -> list[float]:
    state = root / f"{journal_cls.__name__}-{concurrency}"
    state.mkdir()
    (state / "resolv.conf").write_text("")
    launch = LaunchConfig(state_dir=state, name="aa:00:00:00:00:01", nickname="h1")
    config = DnsConfig(listen_host="127.0.0.1", listen_port=0, domain="weave.local.", ttl_s=1,
                       settings=DnsSettings(resolv_conf=state / "resolv.conf", snapshot_delay_s=5.0))
    bus = MemoryBus(MemoryBroker(), "dns")
    ctx = ServiceContext("dns", ServiceConfig(service="dns", launch=launch, metrics_port=0, settings=DnsSettings()),
                         bus, new_registry(), RealClock(), HttpRouter())
    app = DnsApp(config, incarnation="bench", journal=journal_cls(state / "dns-journal.jsonl"))
    await app.start(ctx)
    times: list[float] = []
    counter = iter(range(adds))

    async def caller() -> None:
        for i in counter:
            req = AddRequest(container_id="weave:extern", ip=f"10.{32 + i // 65536}.{i // 256 % 256}.{i % 256}",
                             fqdn=f"n{i}.weave.local")
            t = time.perf_counter()
            await bus.request(subjects.request("dns", "add"), req, ChangeReply)
            times.append(time.perf_counter() - t)
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    await app.stop()
    await bus.close()
    return times


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))] * 1e3


async def main(adds: int) -> None:
    with tempfile.TemporaryDirectory(dir="/var/tmp") as tmp:
        root = Path(tmp)
        print(f"weaveDNS add, bus request to reply, {adds} adds per row (ms)")
        print(f"{'variant':<22}{'callers':>8}{'p50':>9}{'p99':>9}{'adds/s':>10}{'p99 / memory':>14}")
        for conc in (1, 4):
            rows = {}
            for cls, label in ((NoJournal, "memory only"), (NoSyncJournal, "journal, no fsync"),
                               (Journal, "journal (fsync)")):
                t0 = time.perf_counter()
                times = await run_variant(cls, root, adds, conc)
                rate = adds / (time.perf_counter() - t0)
                rows[label] = (pct(times, 0.5), pct(times, 0.99), rate)
            base = rows["memory only"][1]
            for label, (p50, p99, rate) in rows.items():
                print(f"{label:<22}{conc:>8}{p50:>9.3f}{p99:>9.3f}{rate:>10.0f}{p99 / base:>14.2f}")
        print("goal: p99 of the add path < 5 ms")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--adds", type=int, default=2000)
    asyncio.run(main(ap.parse_args().adds))
