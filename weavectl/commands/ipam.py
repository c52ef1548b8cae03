"""IPAM commands: `weave rmpeer`, `weave prime`, and `weave ipam ...` helpers.

rmpeer goes through Weave's HTTP API (DELETE /peer/{id}), as Weave's script does; the
others use the bus, where the caller says how long it will wait (an allocation may
wait for consensus far longer than an HTTP client's timeout).
"""
from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from pathlib import Path

from shared import subjects
from shared.bus import BusError
from shared.config import state_dir_from_env
from shared.schemas.base import Message, Ok
from shared.schemas.ipam import (AllocateReply, AllocateRequest, ClaimRequest, LookupReply, LookupRequest,
                                 PrimeRequest, ReleaseRequest, StatusReply, StatusRequest)
from weavectl import api, launcher
from weavectl.launcher import LaunchError

DEFAULT_WAIT_S = 60.0


def _state_dir(args: argparse.Namespace) -> Path:
    return args.state_dir or state_dir_from_env()


def _request(args: argparse.Namespace, verb: str, msg: Message, reply_type, wait_s: float = 0.0):
    try:
        return launcher.bus_request(_state_dir(args), subjects.request("ipam", verb), msg, reply_type,
                                    timeout=wait_s + 5.0)
    except BusError as exc:
        down = exc.code == "timeout" or "no service answers" in exc.description
        hint = "is the ipam service running? see 'weave ps-services'" if down else ""
        raise LaunchError(exc.description, hint) from None


def cmd_rmpeer(args: argparse.Namespace) -> int:
    for peer in args.peers:
        sys.stdout.write(api.call("DELETE", "/peer/" + urllib.parse.quote(peer, safe="")))
    return 0


def cmd_prime(args: argparse.Namespace) -> int:
    _request(args, "prime", PrimeRequest(wait_s=args.wait), Ok, args.wait)
    return 0


def cmd_allocate(args: argparse.Namespace) -> int:
    reply = _request(args, "allocate", AllocateRequest(ident=args.ident, subnet=args.subnet, wait_s=args.wait),
                     AllocateReply, args.wait)
    print(reply.cidr)
    return 0


def cmd_claim(args: argparse.Namespace) -> int:
    _request(args, "claim", ClaimRequest(ident=args.ident, cidr=args.cidr, wait_s=args.wait), Ok, args.wait)
    return 0


def cmd_release(args: argparse.Namespace) -> int:
    _request(args, "release", ReleaseRequest(ident=args.ident, addr=args.addr), Ok)
    return 0


def cmd_lookup(args: argparse.Namespace) -> int:
    reply = _request(args, "lookup", LookupRequest(ident=args.ident, subnet=args.subnet), LookupReply)
    if not reply.cidrs:
        raise LaunchError(f"no addresses for {args.ident}" + (f" in {args.subnet}" if args.subnet else ""))
    print(" ".join(reply.cidrs))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    reply = _request(args, "status", StatusRequest(), StatusReply)
    if args.json:
        print(json.dumps(reply.model_dump(mode="json"), indent=1))
    else:
        print(f"{reply.status} (range {reply.range}, {reply.active_ips} active, {len(reply.entries)} ring entries"
              + (f"; refused: {reply.refused}" if reply.refused else "") + ")")
    return 0


def _cidr(text: str) -> str:
    """argparse type: an IPv4 address with its prefix length, a.b.c.d/n."""
    import ipaddress

    try:
        iface = ipaddress.IPv4Interface(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 address with a prefix length, e.g. 10.32.0.5/12")
    if "/" not in text:
        raise argparse.ArgumentTypeError(f"{text!r} needs a prefix length, e.g. {iface.ip}/12")
    return text


def _ip(text: str) -> str:
    import ipaddress

    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an IPv4 address") from None
    return text


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("rmpeer", help="take over the IP ranges of dead peers")
    p.add_argument("peers", nargs="+", metavar="PEER", help="peer name or nickname")
    p.set_defaults(handler=cmd_rmpeer)
    p = sub.add_parser("prime", help="wait until IP allocation has a ring (starting consensus if needed)")
    p.add_argument("--wait", type=float, default=DEFAULT_WAIT_S, help="seconds to wait (default 60)")
    p.set_defaults(handler=cmd_prime)

    ipam = sub.add_parser("ipam", help="allocate, claim, release and look up addresses").add_subparsers(
        dest="ipam_command", metavar="ACTION", required=True)
    p = ipam.add_parser("allocate", help="an address for ID (the same one again if it has one)")
    p.add_argument("ident", metavar="ID")
    p.add_argument("subnet", nargs="?", metavar="CIDR", type=_cidr,
                   help="subnet to allocate in (default: the default subnet)")
    p.add_argument("--wait", type=float, default=DEFAULT_WAIT_S, help="seconds to wait (default 60)")
    p.set_defaults(handler=cmd_allocate)
    p = ipam.add_parser("claim", help="a specific address for ID")
    p.add_argument("ident", metavar="ID")
    p.add_argument("cidr", metavar="IP/LEN", type=_cidr)
    p.add_argument("--wait", type=float, default=DEFAULT_WAIT_S, help="seconds to wait (default 60)")
    p.set_defaults(handler=cmd_claim)
    p = ipam.add_parser("release", help="free ID's address IP, or all of ID's addresses")
    p.add_argument("ident", metavar="ID")
    p.add_argument("addr", nargs="?", metavar="IP", type=_ip)
    p.set_defaults(handler=cmd_release)
    p = ipam.add_parser("lookup", help="the addresses ID holds")
    p.add_argument("ident", metavar="ID")
    p.add_argument("subnet", nargs="?", metavar="CIDR", type=_cidr)
    p.set_defaults(handler=cmd_lookup)
    p = ipam.add_parser("status", help="the allocator's state in one line (or --json)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_status)
