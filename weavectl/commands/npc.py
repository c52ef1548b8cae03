"""`weave policy apply|delete|list|status`: network policies enforced on every host.

`apply` takes YAML/JSON files of NetworkPolicy (and Namespace, for namespace labels)
documents, `-` for stdin; the host stores them and gossips them to every host. A file
with a document the compiler cannot enforce is refused whole, with the reason.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shared import subjects
from shared.bus import BusError
from shared.config import state_dir_from_env
from shared.schemas.npc import (ApplyReply, ApplyRequest, DeleteReply, DeleteRequest, ListReply, ListRequest)
from weavectl import api
from weavectl.launcher import LaunchError, bus_request

REQUEST_TIMEOUT_S = 20.0  # the service waits up to 10 s for the kernel before replying


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("policy", help="network policies (Kubernetes NetworkPolicy), enforced on every host")
    actions = p.add_subparsers(dest="policy_action", metavar="ACTION", required=True)
    a = actions.add_parser("apply", help="store and enforce the NetworkPolicy/Namespace documents of files")
    a.add_argument("files", nargs="+", metavar="FILE", help="YAML or JSON file ('-' for stdin)")
    a.set_defaults(handler=cmd_apply)
    d = actions.add_parser("delete", help="remove a NetworkPolicy (or Namespace) on every host")
    d.add_argument("name")
    d.add_argument("-n", "--namespace", default="default", help="the policy's namespace (default: default)")
    d.add_argument("--kind", choices=("NetworkPolicy", "Namespace"), default="NetworkPolicy")
    d.set_defaults(handler=cmd_delete)
    actions.add_parser("list", help="every policy this host knows and whether it is enforced") \
        .set_defaults(handler=cmd_list)
    actions.add_parser("status", help="what npc enforces on this host (as 'weave status npc')") \
        .set_defaults(handler=cmd_status)


def _request(args: argparse.Namespace, verb: str, msg, reply_type):
    state_dir = args.state_dir or state_dir_from_env()
    try:
        return bus_request(state_dir, subjects.request("npc", verb), msg, reply_type, timeout=REQUEST_TIMEOUT_S)
    except BusError as exc:
        hint = "is the npc service running? see 'weave ps-services'" if exc.code in ("unavailable", "timeout") else ""
        raise LaunchError(exc.description, hint) from None
    except OSError as exc:
        raise LaunchError(f"cannot reach this host's bus: {exc}", "is weave running? start it with 'weave launch'") \
            from None


def _read(name: str) -> str:
    try:
        return sys.stdin.read() if name == "-" else Path(name).read_text()
    except OSError as exc:
        raise LaunchError(f"cannot read {name}: {exc.strerror}") from None


def cmd_apply(args: argparse.Namespace) -> int:
    manifest = "\n---\n".join(_read(f) for f in args.files)
    reply: ApplyReply = _request(args, "apply", ApplyRequest(manifest=manifest), ApplyReply)
    for ref, what in [(r, "configured") for r in reply.changed] + [(r, "unchanged") for r in reply.unchanged]:
        where = f"{ref.namespace}/{ref.name}" if ref.namespace else ref.name
        print(f"{ref.kind.lower()} {where} {what}")
    if not reply.enforced:
        print("warning: not yet enforced on this host; see 'weave policy status'", file=sys.stderr)
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    req = DeleteRequest(kind=args.kind, namespace=args.namespace, name=args.name)
    reply: DeleteReply = _request(args, "delete", req, DeleteReply)
    ref = reply.deleted
    print(f"{ref.kind.lower()} {ref.namespace + '/' if ref.namespace else ''}{ref.name} deleted")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    reply: ListReply = _request(args, "list", ListRequest(), ListReply)
    print(f"{'KIND':<14} {'NAMESPACE':<16} {'NAME':<28} {'SOURCE':<10} {'VERSION':>7} {'ORIGIN':<18} STATUS")
    for o in reply.objects:
        state = "enforced" if o.enforced else f"rejected: {o.reason}"
        print(f"{o.ref.kind:<14} {o.ref.namespace or '-':<16} {o.ref.name:<28} {o.source:<10} {o.version:>7} "
              f"{o.origin or '-':<18} {state}")
    return 0


def cmd_status(_: argparse.Namespace) -> int:
    sys.stdout.write(api.call("GET", "/status/npc"))
    return 0
