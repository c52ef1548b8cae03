"""`weave demo` (what `make demo` runs): a 3-host testbed and what works on it.

Each service issue makes this show more. Today: three stacks launched in their own
network namespaces, each with nats-server and five healthy services, and an encrypted
mesh between them (with the time it took to form). Exits non-zero if anything failed;
tears the testbed down unless --keep.
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


def established(tb: Testbed, h) -> list[str]:
    out = tb.weave(h, "status", "connections", check=False).stdout
    return [line for line in out.splitlines() if " established " in line]


def show_mesh(tb: Testbed, started: float, timeout: float = 30.0) -> list[str]:
    """Wait for the full mesh, then show what each host sees."""
    want = len(tb.hosts) - 1
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(len(established(tb, h)) < want for h in tb.hosts):
        time.sleep(0.1)
    missing = [h.nickname for h in tb.hosts if len(established(tb, h)) < want]
    if missing:
        return [f"mesh incomplete after {timeout:g} s on: {', '.join(missing)}"]
    step(f"full mesh of {len(tb.hosts)} hosts, every connection established, "
         f"{time.monotonic() - started:.1f} s after the launches began")
    print(tb.weave(tb.hosts[0], "status", check=False).stdout.rstrip())
    for h in tb.hosts:
        print(f"-- {h.nickname}: weave status connections")
        print("\n".join(established(tb, h)))
    return []


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
        failures += show_mesh(tb, started)
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
    step("demo OK: every host runs nats-server and the gossip, ipam, dns, datapath and npc services, "
         "joined in one encrypted mesh")
    return 0


if __name__ == "__main__":
    sys.exit(run_demo(argparse.Namespace(hosts=3, password="demo-secret", keep=False,
                                         root=DEFAULT_ROOT / "demo", prefix="wd")))
