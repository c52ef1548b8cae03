"""`weave dns-add`, `dns-remove`, `dns-lookup` (Weave Net's shapes, weave:weave), and the
`dns` view of `weave status`.

    weave dns-add    [IP ...] CONTAINER [-h FQDN] | IP ... -h FQDN
    weave dns-remove [IP ...] CONTAINER [-h FQDN] | IP ... -h FQDN
    weave dns-lookup NAME

Without a container the entries belong to `weave:extern`. A container given without
addresses takes the addresses (and, without -h, the name) the datapath knows for it.
`dns-remove CONTAINER` without addresses removes all of that container's names.
`dns-lookup` sends a real DNS query to this host's weaveDNS and prints the addresses,
one a line, like `dig +short`. Names and addresses are checked here first, so a bad one
fails with one line that says why.
"""
from __future__ import annotations

import argparse
import socket
import sys
from urllib.parse import quote

from shared.weave.dns_names import BadAddress, BadName, check_fqdn, looks_like_address, parse_ipv4
from shared.weave.dns_names import is_subdomain
from shared import subjects
from shared.bus import BusError
from shared.config import state_dir_from_env
from shared.schemas.datapath import ContainerEvent, ContainersReply, ContainersRequest
from shared.schemas.dns import ChangeReply, RemoveRequest
from weavectl import api, launcher
from weavectl.launcher import LaunchError

EXTERN = "weave:extern"  # Weave's container id for names of addresses outside weave
LOOKUP_TIMEOUT_S = 5.0
SHAPES = "[IP ...] CONTAINER [-h FQDN] | IP ... -h FQDN"


def add_parsers(sub: argparse._SubParsersAction) -> None:
    for verb, what, handler in (("dns-add", "register", cmd_dns_add), ("dns-remove", "remove", cmd_dns_remove)):
        p = sub.add_parser(verb, add_help=False, usage=f"weave {verb} {SHAPES}",
                           help=f"{what} weaveDNS names of a container or of addresses")
        p.add_argument("--help", action="help", help="show this help and exit")
        p.add_argument("-h", "--hostname", dest="fqdn", default=None, help="the DNS name (FQDN)")
        p.add_argument("args", nargs="*", metavar="IP|CONTAINER", help="addresses, then the container")
        p.set_defaults(handler=handler)
    p = sub.add_parser("dns-lookup", help="ask this host's weaveDNS for a name's addresses")
    p.add_argument("name", help="a name; an unqualified one is looked up in the weaveDNS domain")
    p.set_defaults(handler=cmd_dns_lookup)


def parse_args(args: list[str], fqdn: str | None) -> tuple[list[str], str | None, str | None]:
    """(addresses, container, fqdn) from Weave's argument shapes; LaunchError when they
    do not fit, or when an address or the name is malformed."""
    ips = []
    while args and looks_like_address(args[0]):
        ips.append(args.pop(0))
    if len(args) > 1:
        raise LaunchError(f"unexpected argument {args[1]!r}: expected {SHAPES}")
    container = args[0] if args else None
    if container is None and not (ips and fqdn):
        raise LaunchError(f"give a container, or addresses and -h FQDN: {SHAPES}")
    try:
        for ip in ips:
            parse_ipv4(ip)
        name = check_fqdn(fqdn) if fqdn is not None else None
    except (BadAddress, BadName) as exc:
        raise LaunchError(str(exc)) from None
    return ips, container, name


def _docker_id(args: argparse.Namespace, container: str | None) -> str | None:
    """A Docker container's name or ID -> its full ID (what weaveDNS knows it by)."""
    if container is None or container == EXTERN:
        return container
    from weavectl import docker_names

    docker = docker_names.resolve(args, container)
    return docker.id if docker is not None else container


def cmd_dns_add(args: argparse.Namespace) -> int:
    ips, container, name = parse_args(list(args.args), args.fqdn)
    container = _docker_id(args, container)
    if container is not None and container != EXTERN:  # Weave's dns-add fails for an unknown container too
        known = _attached(args, container)
        ips = ips or [c.split("/")[0] for c in known.cidrs]
        try:
            name = name or (check_fqdn(known.fqdn) if known.fqdn else None)
        except BadName as exc:
            raise LaunchError(f"container {container}'s name cannot be registered: {exc}") from None
        if name is None:
            raise LaunchError(f"container {container} has no DNS name; give one with -h FQDN")
    domain = api.call("GET", "/domain")
    if not is_subdomain(domain, name):
        raise LaunchError(f"{name} is not in the weaveDNS domain {domain}; weaveDNS would ignore it")
    form = {"fqdn": [name]}
    if container is not None:
        form["check-alive"] = ["true"]
    for ip in ips:
        api.call("PUT", f"/name/{quote(container or EXTERN, safe=':')}/{ip}", form)
    return 0


def cmd_dns_remove(args: argparse.Namespace) -> int:
    ips, container, name = parse_args(list(args.args), args.fqdn)
    container = _docker_id(args, container)
    state_dir = args.state_dir or state_dir_from_env()
    removed = 0
    for ip in ips or [None]:
        req = RemoveRequest(container_id=container or EXTERN, ip=ip, fqdn=name)
        try:
            reply = launcher.bus_request(state_dir, subjects.request("dns", "remove"), req, ChangeReply)
        except BusError as exc:
            raise LaunchError(f"weaveDNS did not remove the names ({exc.code}: {exc.message})") from None
        removed += len(reply.entries)
    if not removed:
        given = " ".join([*ips, *([container] if container else []), *(["-h", name] if name else [])])
        raise LaunchError(f"no weaveDNS name of this host matches '{given}': nothing removed",
                          "weave status dns lists the names; only the host that added a name can remove it")
    return 0


def _attached(args: argparse.Namespace, container: str) -> ContainerEvent:
    """The datapath's record of an attached container (its addresses and name)."""
    state_dir = args.state_dir or state_dir_from_env()
    try:
        reply = launcher.bus_request(state_dir, subjects.request("datapath", "containers"), ContainersRequest(),
                                     ContainersReply)
    except BusError as exc:
        raise LaunchError(f"cannot find the addresses of {container}: the datapath did not answer ({exc.code})",
                          "give the addresses on the command line") from None
    for known in reply.containers:
        if known.container_id == container:
            return known
    raise LaunchError(f"container {container} is not attached to weave, so weaveDNS cannot name it",
                      f"attach it first (weave attach --name FQDN {container}), or for a name without a "
                      f"container: weave dns-add IP... -h FQDN")


def cmd_dns_lookup(args: argparse.Namespace) -> int:
    from dnslib import QTYPE, DNSRecord

    host, _, port = api.call("GET", "/dns-address-port").rpartition(":")
    host = "127.0.0.1" if host in ("", "0.0.0.0") else host.strip("[]")
    try:
        raw = DNSRecord.question(args.name, "A").send(host, int(port), timeout=LOOKUP_TIMEOUT_S)
    except (OSError, socket.timeout) as exc:
        raise LaunchError(f"no answer from weaveDNS at {host}:{port}: {exc or 'timeout'}") from None
    for rr in DNSRecord.parse(raw).rr:
        if rr.rtype == QTYPE.A:
            sys.stdout.write(f"{rr.rdata}\n")
    return 0
