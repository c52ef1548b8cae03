"""Time from `weave launch` on 3 hosts to a full established mesh.

Side by side in one run:
- stack: launching the 3 stacks with no peers (process start-up only: nats-server and
  five Python services per host, in parallel): the floor our launch cannot beat;
- mesh: launching them with each other as peers until every host shows 2 established
  connections;
- mesh formation = mesh - stack, the part the router itself adds.
The real Weave Net router measured 0.62 s plain / 0.67 s encrypted on this machine
(baseline.md; a single Go process per host), printed for reference, not re-run here.

    python -m bench.launch [--runs 3] [--password P] [--json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from weavectl.testbed import Testbed

WEAVE_GO_LAUNCH_TO_MESH_S = {"plain": 0.62, "encrypted": 0.67}


def _established(tb: Testbed, h) -> int:
    out = tb.weave(h, "status", "connections", check=False).stdout
    return sum(1 for line in out.splitlines() if " established " in line)


def one_run(root: Path, hosts: int, password: str | None, connect: bool,
            launch_args: tuple[str, ...] = ("--no-scope",)) -> float:
    """Seconds from `weave launch` on every host to healthy stacks (and, with `connect`,
    a full mesh). `launch_args`: Weave Net's services only by default (issue 15 counts
    the stack as `weave launch --no-scope` runs it)."""
    tb = Testbed(root, prefix="wbl")
    tb.up(hosts, password=password, launch=False)
    try:
        started = time.monotonic()
        with ThreadPoolExecutor(hosts) as pool:
            list(pool.map(lambda h: tb.launch(h, connect=connect, launch_args=launch_args), tb.hosts))
            # every host asked at once (one `weave status connections` is ~0.08 s of a CLI
            # process: asked one host after another, the asking alone took 0.25 s a round)
            while connect and any(n < hosts - 1 for n in pool.map(lambda h: _established(tb, h), tb.hosts)):
                if time.monotonic() - started > 60:
                    raise RuntimeError("mesh did not form within 60 s")
                time.sleep(0.02)
        return time.monotonic() - started
    finally:
        tb.down()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--hosts", type=int, default=3)
    parser.add_argument("--password", default=None)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    stack, mesh = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            stack.append(one_run(Path(tmp) / f"s{i}", args.hosts, args.password, connect=False))
            mesh.append(one_run(Path(tmp) / f"m{i}", args.hosts, args.password, connect=True))
    kind = "encrypted" if args.password else "plain"
    s, m = statistics.median(stack), statistics.median(mesh)
    result = {"hosts": args.hosts, "runs": args.runs, "encryption": kind,
              "stack_startup_s": round(s, 3), "launch_to_mesh_s": round(m, 3),
              "mesh_formation_s": round(m - s, 3), "mesh_over_stack": round(m / s, 2),
              "weave_go_launch_to_mesh_s": WEAVE_GO_LAUNCH_TO_MESH_S[kind],
              "ours_over_weave_go": round(m / WEAVE_GO_LAUNCH_TO_MESH_S[kind], 2)}
    if args.json:
        print(json.dumps(result))
        return
    print(f"launch of {args.hosts} hosts ({kind}), median of {args.runs} runs")
    print(f"  stack start-up, no peers        {s:6.2f} s   (1.00)")
    print(f"  launch to full established mesh {m:6.2f} s   ({m / s:.2f} x stack)")
    print(f"  mesh formation on top           {m - s:6.2f} s")
    print(f"  Weave Net 2.8 (baseline.md)     {WEAVE_GO_LAUNCH_TO_MESH_S[kind]:6.2f} s   "
          f"(ours is {m / WEAVE_GO_LAUNCH_TO_MESH_S[kind]:.1f} x)")


if __name__ == "__main__":
    main()
