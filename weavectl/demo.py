"""`weave demo` (what `make demo` runs): a 3-host testbed and what works on it.

Each service issue makes this show more. Today: three stacks launched in their own
network namespaces, each with nats-server and five healthy services. Exits non-zero if
anything failed; tears the testbed down unless --keep.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from weavectl.testbed import DEFAULT_ROOT, Testbed, TestbedError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="bring up a 3-host testbed and show what works")
    p.add_argument("--hosts", type=int, default=3)
    p.add_argument("--password", default="demo-secret")
    p.add_argument("--keep", action="store_true", help="leave the testbed up afterwards")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT / "demo")
    p.add_argument("--prefix", default="wd")
    p.set_defaults(handler=run_demo)


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


def run_demo(args: argparse.Namespace) -> int:
    tb = Testbed(args.root, args.prefix)
    if tb.namespaces():
        step(f"removing a previous demo testbed ({args.prefix}-*)")
        tb.down()
    failures: list[str] = []
    try:
        step(f"creating {args.hosts} hosts in network namespaces and launching weave on each")
        started = time.monotonic()
        tb.up(args.hosts, password=args.password)
        step(f"all {args.hosts} stacks healthy after {time.monotonic() - started:.1f} s")
        for h in tb.hosts:
            proc = tb.weave(h, "ps-services", check=False)
            print(proc.stdout.rstrip() or proc.stderr.rstrip())
            if proc.returncode != 0 or "unhealthy" in proc.stdout:
                failures.append(f"{h.nickname}: services not all healthy")
    except TestbedError as exc:
        failures.append(str(exc))
    finally:
        if args.keep and not failures:
            step(f"testbed left up: 'weave testbed --root {args.root} --prefix {args.prefix} status|exec|down'")
        else:
            step("tearing the testbed down")
            tb.down()
    if failures:
        step("FAILED:\n  " + "\n  ".join(failures))
        return 1
    step("demo OK: every host runs nats-server and the gossip, ipam, dns, datapath and npc services")
    return 0


if __name__ == "__main__":
    sys.exit(run_demo(argparse.Namespace(hosts=3, password="demo-secret", keep=False,
                                         root=DEFAULT_ROOT / "demo", prefix="wd")))
