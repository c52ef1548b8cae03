"""IPAM benchmarks: the first allocation on a fresh 3-host mesh, allocations per second on
one host, and the cost of merging a received 1,000-entry ring.

Each figure is printed next to a baseline measured in the same run on the same path,
as a ratio (this machine is shared; only ratios compare across runs):
- first allocation (consensus among 3 hosts, then allocate): against an HTTP round
  trip to the same host's ipam service (GET /ipinfo/defaultsubnet, same forwarding
  path); Weave Net 2.8 takes 12-39 ms here;
- allocations/s: HTTP POST /ip/{id} against GET /ipinfo/defaultsubnet, and bus
  weave.ipam.allocate against weave.ipam.status, sequential and concurrent;
- ring merge: Ring.merge of a 1,000-entry ring (every entry newer) against a dict merge
  of 1,000 (token -> version) entries keeping the newer; and decode + merge of the gob
  gossip against json.loads + the same dict merge.

    .venv/bin/python -m bench.ipam [--meshes 3] [--allocs 500]
"""
from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

from shared.weave.peer_name import PeerName
from services.ipam import codec
from services.ipam.messages import IpamGossip
from services.ipam.ring import Ring
from weavectl.testbed import Testbed

ROOT = Path(__file__).resolve().parent.parent

HTTP_CLIENT = r"""
import json, statistics, sys, time, urllib.request
from concurrent.futures import ThreadPoolExecutor
def timed(method, path):
    req = urllib.request.Request("http://127.0.0.1:6784" + path, data=b"" if method == "POST" else None,
                                 method=method)
    t = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as r:
        r.read()
    return time.perf_counter() - t
out = {}
for name, (method, pattern, n, threads) in json.loads(sys.argv[1]).items():
    paths = [pattern.format(i=i) for i in range(n)]
    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        lat = list(pool.map(lambda p: timed(method, p), paths))
    out[name] = {"wall": time.perf_counter() - t, "median": statistics.median(lat), "n": n}
print(json.dumps(out))
"""

BUS_CLIENT = r"""
import asyncio, json, os, statistics, sys, time
from pathlib import Path
from shared import subjects
from shared.config import LaunchConfig
from shared.nats_bus import NatsBus
from shared.schemas.ipam import AllocateReply, AllocateRequest, StatusReply, StatusRequest
async def main(n, concurrency):
    launch = LaunchConfig.load(Path(os.environ["WEAVE_STATE_DIR"]))
    bus = await NatsBus.connect(launch.bus_url, launch.bus_token(), "bench")
    plans = {"status": lambda i: bus.request(subjects.request("ipam", "status"), StatusRequest(), StatusReply),
             "allocate": lambda i: bus.request(subjects.request("ipam", "allocate"),
                                               AllocateRequest(ident=f"bus-{concurrency}-{i}"), AllocateReply)}
    out = {}
    for name, call in plans.items():
        sem = asyncio.Semaphore(concurrency)
        async def one(i):
            async with sem:
                await call(i)
        t = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        out[name] = time.perf_counter() - t
    await bus.close()
    print(json.dumps(out))
asyncio.run(main(int(sys.argv[1]), int(sys.argv[2])))
"""


def in_host(tb: Testbed, host: str, code: str, *args: str) -> dict:
    proc = tb.exec(host, [sys.executable, "-c", code, *args], check=True, timeout=600, cwd=str(ROOT))
    return json.loads(proc.stdout)


def http_plan(tb: Testbed, host: str, plan: dict) -> dict:
    return in_host(tb, host, HTTP_CLIENT, json.dumps(plan))


def fresh_mesh(root: Path) -> Testbed:
    tb = Testbed(root / secrets.token_hex(2), f"wbi{secrets.token_hex(2)}")
    tb.up(3, launch_args=("--ipalloc-init", "consensus=3"))
    deadline = time.monotonic() + 30
    while "with 6 established" not in tb.weave("h1", "status", check=False).stdout:
        if time.monotonic() > deadline:
            raise RuntimeError("the 3-host mesh did not form")
        time.sleep(0.1)
    return tb


def first_allocation(root: Path, meshes: int) -> tuple[list[float], list[float]]:
    """Per fresh mesh: (first POST /ip/{id} on h1, median HTTP round trip before it), in s."""
    firsts, trips = [], []
    for _ in range(meshes):
        tb = fresh_mesh(root)
        try:
            out = http_plan(tb, "h1", {"rtt": ["GET", "/ipinfo/defaultsubnet", 20, 1],
                                       "first": ["POST", "/ip/first", 1, 1]})
            firsts.append(out["first"]["median"])
            trips.append(out["rtt"]["median"])
        finally:
            tb.down()
    return firsts, trips


def allocation_rates(root: Path, n: int) -> dict:
    tb = fresh_mesh(root)
    try:
        http_plan(tb, "h1", {"warm": ["POST", "/ip/warm", 1, 1]})
        seq = http_plan(tb, "h1", {"rtt": ["GET", "/ipinfo/defaultsubnet", n, 1],
                                   "alloc": ["POST", "/ip/seq-{i}", n, 1]})
        par = http_plan(tb, "h1", {"rtt": ["GET", "/ipinfo/defaultsubnet", n, 16],
                                   "alloc": ["POST", "/ip/par-{i}", n, 16]})
        bus_seq = in_host(tb, "h1", BUS_CLIENT, str(n), "1")
        bus_par = in_host(tb, "h1", BUS_CLIENT, str(n), "64")
    finally:
        tb.down()
    return {"http sequential": (n / seq["alloc"]["wall"], n / seq["rtt"]["wall"]),
            "http 16 clients": (n / par["alloc"]["wall"], n / par["rtt"]["wall"]),
            "bus sequential": (n / bus_seq["allocate"], n / bus_seq["status"]),
            "bus 64 in flight": (n / bus_par["allocate"], n / bus_par["status"])}


def _best(runs: int, fn) -> float:
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def ring_merge(entries: int = 1000, runs: int = 20) -> dict:
    """Seconds per merge of a ring with `entries` entries, every one of them newer."""
    peers = [PeerName(0xAA0000000000 + i) for i in range(1, entries + 1)]
    ours = Ring(0x0A200000, 0x0A300000, PeerName(0xBB0000000001))
    ours.claim_for_peers(peers)
    theirs = ours.copy(peer=peers[0])
    for e in theirs.entries:
        e.version += 1
    assert len(ours.entries) == entries
    payload = codec.encode_gossip(IpamGossip(0, {}, None, theirs))
    copies = [ours.copy() for _ in range(runs)]
    merge_s = _best(1, lambda: [c.merge(theirs) for c in copies]) / runs
    copies = [ours.copy() for _ in range(runs)]
    full_s = _best(1, lambda: [c.merge(codec.decode_gossip(payload).ring) for c in copies]) / runs
    mine = {e.token: (e.version, int(e.peer), e.free) for e in ours.entries}
    other = {e.token: (e.version, int(e.peer), e.free) for e in theirs.entries}
    as_json = json.dumps({str(k): v for k, v in other.items()})

    def dict_merge(a: dict, b: dict) -> dict:
        return {k: max(a.get(k, v), v) for k, v in b.items()}

    dict_s = _best(runs, lambda: dict_merge(mine, other))
    json_s = _best(runs, lambda: dict_merge(mine, {int(k): tuple(v) for k, v in json.loads(as_json).items()}))
    return {"merge": (merge_s, dict_s), "decode + merge": (full_s, json_s), "bytes": len(payload)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--meshes", type=int, default=3, help="fresh meshes for the first-allocation figure")
    parser.add_argument("--allocs", type=int, default=500, help="allocations per rate figure")
    args = parser.parse_args(argv)
    merge = ring_merge()
    print(f"ring merge, 1,000 entries ({merge['bytes']} bytes of gossip):")
    for name in ("merge", "decode + merge"):
        ours, base = merge[name]
        print(f"  {name:<16} {ours * 1e3:8.2f} ms   baseline dict{' + json' if 'decode' in name else ''} merge "
              f"{base * 1e3:6.3f} ms   ratio x{ours / base:.0f}")
    with tempfile.TemporaryDirectory(prefix="bench-ipam-") as tmp:
        firsts, trips = first_allocation(Path(tmp), args.meshes)
        first, trip = statistics.median(firsts), statistics.median(trips)
        print(f"first allocation on a fresh 3-host mesh (consensus=3), median of {args.meshes}: {first * 1e3:.1f} ms"
              f" (each: {', '.join(f'{f * 1e3:.1f}' for f in firsts)})\n"
              f"  baseline HTTP round trip to ipam {trip * 1e3:.2f} ms   ratio x{first / trip:.1f}"
              f"   (Weave Net 2.8: 12-39 ms)")
        print(f"allocations per second on one host ({args.allocs} each):")
        for name, (ours, base) in allocation_rates(Path(tmp), args.allocs).items():
            print(f"  {name:<18} {ours:7.0f}/s   baseline round trips {base:7.0f}/s   ratio {ours / base:.2f}")


if __name__ == "__main__":
    main()
