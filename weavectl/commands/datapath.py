"""`weave attach`, `detach`, `ps`, `expose`, `hide` (Weave Net's shapes, weave:weave),
served by the host's datapath over the bus.

    weave attach [ADDR ...] CONTAINER [--name FQDN] [--label k=v]... [--namespace NS] [--no-multicast-route]
    weave detach [ADDR ...] CONTAINER
    weave ps [CONTAINER ...]
    weave expose [ADDR ...] [-h FQDN] [--without-masquerade]
    weave hide [ADDR ...]

CONTAINER: an `ip netns` name, a namespace path (/var/run/netns/x, /proc/<pid>/ns/net),
a pid, or a Docker container's name or ID (weavectl/docker_names.py: resolved through
this host's engine; attached under its full ID, so IPAM and weaveDNS know it by that,
and detached by the docker-plugin's watcher when it stops). ADDR: ip/len | net:<cidr> |
net:default (none: net:default, from IPAM). `weave ps` names Docker containers by their
Docker name.
attach, detach, expose and hide print the addresses they gave or took, without the
prefix length, as Weave does; ps prints `<container> <mac> <cidr>...` per line,
weave:expose first.
"""
from __future__ import annotations

import argparse
import sys

from shared import subjects
from shared.bus import BusError
from shared.config import state_dir_from_env
from shared.schemas.base import Message
from shared.schemas.datapath import (Attachment, AttachRequest, DetachReply, DetachRequest, ExposeRequest,
                                     HideRequest, PsReply, PsRequest)
from weavectl import docker_names, launcher
from weavectl.launcher import LaunchError

TIMEOUT_S = 40.0
"""Above the datapath's own wait for an IPAM allocation (30 s), so its answer arrives."""
HINTS = {"unavailable": "is IPAM running? ('weave status ipam'); or give an explicit address",
         "not_found": "check the name with 'ip netns list', or 'weave ps'"}


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attach", help="attach a container (network namespace) to the weave network")
    p.add_argument("args", nargs="+", metavar="[ADDR ...] CONTAINER",
                   help="addresses (ip/len, net:<cidr>, net:default), then the container")
    p.add_argument("--name", default="", help="register this DNS name (FQDN) in weaveDNS")
    p.add_argument("--label", action="append", default=[], metavar="K=V", help="a label (npc podSelector)")
    p.add_argument("--namespace", default="default", help="its policy namespace")
    p.add_argument("--no-multicast-route", action="store_true", help="do not route 224.0.0.0/4 via weave")
    p.set_defaults(handler=cmd_attach)
    p = sub.add_parser("detach", help="detach a container, or some of its addresses")
    p.add_argument("args", nargs="+", metavar="[ADDR ...] CONTAINER")
    p.set_defaults(handler=cmd_detach)
    p = sub.add_parser("ps", help="list attached containers: id, MAC, addresses")
    p.add_argument("containers", nargs="*", metavar="CONTAINER")
    p.set_defaults(handler=cmd_ps)
    p = sub.add_parser("expose", add_help=False, help="give this host addresses on the weave network")
    p.add_argument("--help", action="help", help="show this help and exit")
    p.add_argument("addrs", nargs="*", metavar="ADDR")
    p.add_argument("-h", "--hostname", dest="fqdn", default="", help="register this DNS name for the host")
    p.add_argument("--without-masquerade", dest="masquerade", action="store_false",
                   help="do not NAT containers' traffic to other networks through this host")
    p.set_defaults(handler=cmd_expose)
    p = sub.add_parser("hide", help="take addresses of this host off the weave network")
    p.add_argument("addrs", nargs="*", metavar="ADDR")
    p.set_defaults(handler=cmd_hide)


def _request(args: argparse.Namespace, verb: str, msg: Message, reply: type) -> Message:
    state_dir = args.state_dir or state_dir_from_env()
    try:
        return launcher.bus_request(state_dir, subjects.request("datapath", verb), msg, reply, timeout=TIMEOUT_S)
    except BusError as exc:
        raise LaunchError(exc.description, HINTS.get(exc.code, "")) from None


def _ips(cidrs) -> str:
    return " ".join(c.split("/")[0] for c in cidrs)


def _labels(pairs: list[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise LaunchError(f"label {pair!r} is not k=v")
        out[key] = value
    return out


def cmd_attach(args: argparse.Namespace) -> int:
    *addrs, container = args.args
    docker = docker_names.running(args, container)
    fqdn, labels = args.name, _labels(args.label)
    if docker is not None:
        container, fqdn = docker.netns_path, fqdn or _docker_fqdn(docker)
        labels = {**docker.labels, **labels}
    reply = _request(args, "attach", AttachRequest(
        container=container, addrs=tuple(addrs), fqdn=fqdn, labels=labels, namespace=args.namespace,
        multicast_route=not args.no_multicast_route, container_id=docker.id if docker else ""), Attachment)
    print(_ips(reply.added))
    return 0


def _docker_fqdn(c) -> str:
    """Weave's attach names a Docker container by its hostname when it has a domain name."""
    return f"{c.hostname}.{c.domainname}" if c.domainname else ""


def cmd_detach(args: argparse.Namespace) -> int:
    *addrs, container = args.args
    docker = docker_names.resolve(args, container)
    if docker is not None:  # its namespace while it runs; once it has stopped, its record
        container = docker.netns_path if docker.running else docker.id
    reply = _request(args, "detach", DetachRequest(container=container, addrs=tuple(addrs)), DetachReply)
    print(_ips(reply.removed))
    return 0


def cmd_ps(args: argparse.Namespace) -> int:
    wanted = []
    for ref in args.containers:
        docker = docker_names.resolve(args, ref)
        wanted.append(docker.netns_path if docker is not None and docker.running else ref)
    reply = _request(args, "ps", PsRequest(containers=tuple(wanted)), PsReply)
    named = docker_names.names(args) if any(len(a.container_id) == 64 for a in reply.attachments) else {}
    for a in reply.attachments:
        sys.stdout.write(" ".join((named.get(a.container_id, a.container_id), a.mac, *a.cidrs)) + "\n")
    return 0


def cmd_expose(args: argparse.Namespace) -> int:
    reply = _request(args, "expose", ExposeRequest(addrs=tuple(args.addrs), fqdn=args.fqdn,
                                                   masquerade=args.masquerade), Attachment)
    print(_ips(reply.added))
    return 0


def cmd_hide(args: argparse.Namespace) -> int:
    reply = _request(args, "hide", HideRequest(addrs=tuple(args.addrs)), DetachReply)
    print(_ips(reply.removed))
    return 0
