"""`weave testbed up|down|status|exec|cut|restore|block|unblock|kill`: the CLI face of Testbed."""
from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path

from weavectl.testbed import DEFAULT_ROOT, Testbed, TestbedError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("testbed", help="several weave hosts on this machine, in network namespaces")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="where host state dirs live")
    p.add_argument("--prefix", default="wt", help="name prefix of every namespace the testbed makes")
    tsub = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    up = tsub.add_parser("up", help="create hosts and launch weave on each")
    up.add_argument("--hosts", type=int, default=3)
    up.add_argument("--password", default=None)
    up.add_argument("--datapath", choices=("sleeve", "fastpath", "auto"), default="auto")
    up.add_argument("--containers", type=int, default=0, help="container namespaces per host")
    up.add_argument("--no-launch", action="store_true", help="make the namespaces only")
    up.add_argument("--docker", action="store_true",
                    help="a Docker engine on every host (dockerd of Debian's docker.io), torn down with the testbed")
    im = tsub.add_parser("images", help="build (once per machine) and load the Docker images into every engine")
    im.add_argument("which", nargs="*", choices=("busybox", "stack"), default=["busybox", "stack"],
                    help="busybox: test containers; stack: weave-py's own image (compose.yaml)")
    tsub.add_parser("down", help="remove everything the testbed made")
    st = tsub.add_parser("status", help="hosts, underlay addresses, containers")
    st.add_argument("--json", action="store_true")
    ex = tsub.add_parser("exec", help="run a command in a host (h1) or container (h1c1)")
    ex.add_argument("target")
    ex.add_argument("cmd", nargs=argparse.REMAINDER)
    for verb in ("cut", "restore"):
        v = tsub.add_parser(verb, help=f"{verb} a host's underlay link")
        v.add_argument("target")
    for verb in ("block", "unblock"):
        v = tsub.add_parser(verb, help=f"{verb} one port between two hosts")
        v.add_argument("a")
        v.add_argument("b")
        v.add_argument("proto", choices=("tcp", "udp"))
        v.add_argument("port", type=int)
    k = tsub.add_parser("kill", help="kill one service of a host (SIGKILL)")
    k.add_argument("target")
    k.add_argument("service")
    for verb in tsub.choices.values():  # `weave testbed up --prefix p` as well as `weave testbed --prefix p up`
        verb.add_argument("--root", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        verb.add_argument("--prefix", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.set_defaults(handler=run_testbed)


def run_testbed(args: argparse.Namespace) -> int:
    tb = Testbed(args.root, args.prefix)
    try:
        return _dispatch(tb, args)
    except TestbedError as exc:
        print(f"weave testbed {args.verb}: {exc}", file=sys.stderr)
        return 1


def _dispatch(tb: Testbed, args: argparse.Namespace) -> int:
    if args.verb == "up":
        tb.up(args.hosts, password=args.password, datapath=args.datapath, containers=args.containers,
              launch=not args.no_launch, docker=args.docker)
        _print_status(tb.status())
    elif args.verb == "images":
        for which in args.which:
            for host, ref in tb.load_image(which).items():
                print(f"{host}: {ref}")
    elif args.verb == "down":
        tb.down()
    elif args.verb == "status":
        status = tb.status()
        print(json.dumps(status, indent=2)) if args.json else _print_status(status)
    elif args.verb == "exec":
        cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
        if not cmd:
            raise TestbedError("exec needs a command after the target, e.g. 'weave testbed exec h1 -- ip addr'")
        proc = tb.exec(args.target, cmd, timeout=3600)
        sys.stdout.write(proc.stdout)
        sys.stderr.write(proc.stderr)
        return proc.returncode
    elif args.verb in ("cut", "restore"):
        getattr(tb, args.verb)(args.target)
    elif args.verb in ("block", "unblock"):
        getattr(tb, args.verb)(args.a, args.b, args.proto, args.port)
    elif args.verb == "kill":
        print(f"killed {args.service} on {args.target} (pid {tb.kill_service(args.target, args.service, signal.SIGKILL)})")
    return 0


def _print_status(status: dict) -> None:
    if not status["hosts"]:
        print("no testbed")
        return
    for h in status["hosts"]:
        containers = ", ".join(c["name"] for c in h["containers"]) or "-"
        print(f"{h['host']:<4} ns {h['namespace']:<8} underlay {h['underlay']:<15} peer {h['peer_name']} "
              f"{'launched' if h['launched'] else 'not launched'}; containers: {containers}")
