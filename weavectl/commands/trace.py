"""`weave trace [--last N] [--match TEXT]`: a host's recent traces as timed trees, read
from the span files in its state dir (used when no OTLP collector is configured)."""
from __future__ import annotations

import argparse
from pathlib import Path

from shared.config import state_dir_from_env
from weavectl.launcher import LaunchError
from weavectl.trace_view import recent


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("trace", help="print this host's recent traces as trees with timings")
    p.add_argument("--last", type=int, default=5, help="how many traces (default 5)")
    p.add_argument("--match", default="", help="only traces with a span whose name contains this")
    p.add_argument("--also", type=Path, action="append", default=[],
                   help="another host's state dir to merge (e.g. testbed hosts)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.last < 1:
        raise LaunchError("--last must be at least 1")
    state_dir = args.state_dir or state_dir_from_env()
    dirs = [d / "traces" for d in (state_dir, *args.also)]
    if not any(d.is_dir() for d in dirs):
        raise LaunchError(f"no traces under {dirs[0]}", "traces are written by a running stack "
                          "launched without --otlp-endpoint")
    out = recent([d for d in dirs if d.is_dir()], args.last, args.match)
    print("\n\n".join(out) if out else "no traces recorded yet")
    return 0
