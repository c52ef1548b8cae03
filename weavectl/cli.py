"""The `weave` command line.

Exit codes: 0 done, 1 the command failed, 2 the command line was wrong. A failure is
one line on stderr, `weave <verb>: <what is wrong>`, maybe followed by one `hint:` or
`usage:` line; never a traceback (an unexpected error is reported as such, in one
line; WEAVE_DEBUG=1 shows the traceback). Commands that talk to a host's stack find it
through `--state-dir` (default /var/lib/weave, or WEAVE_STATE_DIR), which may be given
before or after the verb, as may the testbed's `--root` and `--prefix`.
"""
from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

from shared.paths import state_dir_from_env
from weavectl.errors import LaunchError, describe_error


class _Lazy:
    """A module imported on first use: `weave status` needs none of the launcher's
    imports (pydantic, the bus client), and a CLI verb should answer in well under
    200 ms (issue 15)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str):
        module = importlib.import_module(self._name)
        self.__dict__.update({k: v for k, v in vars(module).items() if not k.startswith("__")})
        return getattr(module, attr)


api = _Lazy("weavectl.api")
launcher = _Lazy("weavectl.launcher")

VERSION = "0.1.0"


class Parser(argparse.ArgumentParser):
    """argparse with Weave's one-line errors: `weave <verb>: <message>`, then the usage."""

    def error(self, message: str):  # noqa: D102 - argparse's hook
        usage = " ".join(self.format_usage().split())
        self.exit(2, f"{self.prog}: {message}\n{usage}\n")


def _accept_anywhere(parser: argparse.ArgumentParser, flags: dict[str, dict]) -> None:
    """Let every subcommand (at any depth) take `flags` too, after its verb; the value
    given last wins, and one not given after the verb leaves the earlier one alone."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                for flag, kw in flags.items():
                    if flag not in sub._option_string_actions:
                        sub.add_argument(flag, **{**kw, "default": argparse.SUPPRESS, "help": argparse.SUPPRESS})
                _accept_anywhere(sub, flags)


def _launch_defaults() -> tuple[dict, dict[str, tuple[str, ...]]]:
    """LaunchConfig's defaults by field, and the choices of its `datapath` and
    `profile`: the CLI states none of its own (the model is the one place; importing it
    loads pydantic, so only the verbs that take these options ask)."""
    import typing

    from shared.config import LaunchConfig

    fields = LaunchConfig.model_fields
    return ({name: f.default for name, f in fields.items()},
            {name: typing.get_args(fields[name].annotation) for name in ("datapath", "profile")})


def _add_launch(sub: argparse._SubParsersAction, options: bool = True) -> None:
    p = sub.add_parser("launch", help="start this host's weave stack", description=(
        "Start nats-server and the gossip, ipam, dns, datapath and npc services and Weave Scope's "
        "probe and app on this host, and return once all of them report healthy."))
    if not options:  # another verb: the launch options are not parsed, so not built
        return
    d, choices = _launch_defaults()
    p.add_argument("peers", nargs="*", help="peers to connect to, host[:port]")
    p.add_argument("--name", default=d["name"], help="peer name (MAC form); default derived from the machine id")
    p.add_argument("--nickname", default=None, help="peer nickname; default the hostname")
    p.add_argument("--host", default=d["host"], help="address to listen on for the mesh")
    p.add_argument("--port", type=int, default=d["port"], help="mesh TCP port and sleeve UDP port")
    p.add_argument("--password", default=os.environ.get("WEAVE_PASSWORD", d["password"]),
                   help="encrypt the mesh with this password (also WEAVE_PASSWORD)")
    p.add_argument("--ipalloc-range", default=d["ipalloc_range"], help="IP range for automatic allocation")
    p.add_argument("--ipalloc-init", default=d["ipalloc_init"], help="consensus[=N] | seed=<names> | observer")
    p.add_argument("--no-dns", action="store_true", default=d["no_dns"], help="do not run weaveDNS")
    p.add_argument("--no-npc", action="store_true", default=d["no_npc"],
                   help="do not run the NetworkPolicy controller (plain Weave Net has no weave-npc)")
    p.add_argument("--no-scope", action="store_true", default=d["no_scope"],
                   help="do not run Weave Scope's probe and app")
    p.add_argument("--scope-listen", default=d["scope_listen"], metavar="ADDR",
                   help="ip:port of the Scope app (its API and UI)")
    p.add_argument("--scope-target", action="append", default=list(d["scope_targets"]), metavar="ADDR",
                   dest="scope_targets", help="also send the probe's reports to the Scope app at ADDR (repeatable)")
    p.add_argument("--scope-token", default=os.environ.get("WEAVE_SCOPE_TOKEN", d["scope_token"]),
                   help="token every request to the Scope app needs, probes' too (also WEAVE_SCOPE_TOKEN)")
    p.add_argument("--scope-controls", action="store_true", default=d["scope_controls"],
                   help="let the Scope app detach containers, restart services and open terminals (needs a token)")
    p.add_argument("--dns-listen-address", default=d["dns_listen_address"], help="weaveDNS address, ip:port")
    p.add_argument("--dns-domain", default=d["dns_domain"], help="weaveDNS domain")
    p.add_argument("--dns-ttl", type=int, default=d["dns_ttl"], help="TTL of weaveDNS answers, seconds")
    p.add_argument("--conn-limit", type=int, default=d["conn_limit"], help="max mesh connections (0 = unlimited)")
    p.add_argument("--no-discovery", action="store_true", default=d["no_discovery"],
                   help="do not connect to peers learnt from gossip")
    p.add_argument("--trusted-subnets", default=",".join(d["trusted_subnets"]),
                   help="comma-separated CIDRs of trusted peers")
    p.add_argument("--datapath", choices=choices["datapath"], default=d["datapath"], help="overlays this host may use")
    p.add_argument("--merge-pages", action="store_true", default=d["merge_pages"],
                   help="let the kernel merge the stack's identical memory pages (KSM; saves memory while the "
                        "host runs ksmd, /sys/kernel/mm/ksm/run = 1)")
    p.add_argument("--docker-host", default=d["docker_host"], metavar="URL",
                   help="this host's Docker engine (default DOCKER_HOST, else /var/run/docker.sock if there): "
                        "runs the Docker network plugin, names Docker containers in attach/ps/dns-add")
    p.add_argument("--no-docker", action="store_true", help="ignore any Docker engine on this host")
    p.add_argument("--docker-plugin-dir", default=d["docker_plugin_dir"], metavar="DIR",
                   help="where the Docker engine looks for plugin sockets")
    p.add_argument("--bus-port", type=int, default=d["bus_port"], help="loopback port of this host's bus")
    p.add_argument("--otlp-endpoint", default=d["otlp_endpoint"], help="OTLP/HTTP collector for traces")
    p.add_argument("--profile", choices=choices["profile"], default=d["profile"], help=argparse.SUPPRESS)
    p.add_argument("--launch-timeout", type=float, default=30.0, help="seconds to wait for a healthy stack")
    p.add_argument("--resume", action="store_true", help="reconnect to the peers of the previous run")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--prepare-only", action="store_true",
                      help="write the host's state and exit (for compose/Kubernetes, which start the services)")
    mode.add_argument("--foreground", action="store_true",
                      help="run the supervisor in this process until stopped (for a container or systemd)")


OWN_VERBS = ("launch", "stop", "restart", "ps-services", "status", "report", "reset", "connect", "forget",
             "version")


def verb_of(argv: list[str]) -> str | None:
    """The verb of a command line (the first word not an option or --state-dir's value)."""
    skip = False
    for word in argv:
        if skip:
            skip = False
        elif word == "--state-dir":
            skip = True
        elif not word.startswith("-"):
            return word
    return None


def build_parser(verb: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with `verb`, only what that verb needs besides this module's
    own verbs (a verb no one claims, or None, builds everything)."""
    parser = Parser(prog="weave", description="Weave Net, rebuilt in Python.")
    parser.add_argument("--state-dir", type=Path, default=None,
                        help="this host's state dir (default /var/lib/weave or WEAVE_STATE_DIR)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_launch(sub, options=verb in (None, "launch"))
    sub.add_parser("stop", help="stop this host's stack")
    p = sub.add_parser("restart", help="restart one service of this host's stack")
    p.add_argument("service", help="gossip, ipam, dns, datapath, npc, scope-probe, scope-app or nats")
    p.add_argument("--datapath", choices=_launch_defaults()[1]["datapath"] if verb in (None, "restart") else None,
                   help="new datapath mode")
    sub.add_parser("ps-services", help="list this host's processes with pid and health")
    p = sub.add_parser("status", help="the router's status, or one view of it")
    p.add_argument("view", nargs="?", choices=("peers", "connections", "targets", "ipam", "dns", "npc"),
                   help="one status view")
    p = sub.add_parser("report", help="the full status as JSON (Weave Net's /report)")
    p.add_argument("-f", "--format", dest="template", default=None,
                   help="a Go text/template over the report, e.g. '{{.Router.Name}}'")
    p = sub.add_parser("reset", help="leave the mesh, stop, and remove this host's state and devices")
    p.add_argument("--force", action="store_true", help="carry on past errors (e.g. IPAM cannot hand over)")
    p = sub.add_parser("connect", help="connect to more peers")
    p.add_argument("peers", nargs="+", metavar="PEER", help="host[:port]")
    p.add_argument("--replace", action="store_true", help="forget every other direct peer")
    p = sub.add_parser("forget", help="stop connecting to peers")
    p.add_argument("peers", nargs="+", metavar="PEER", help="host[:port]")
    sub.add_parser("version", help="print the version")
    from weavectl import commands

    if verb in OWN_VERBS:
        pass
    elif verb == "testbed":
        importlib.import_module("weavectl.testbed_cli").add_parser(sub)
    elif verb == "demo":
        importlib.import_module("weavectl.demo").add_parser(sub)
    elif verb and any(verb in verbs for verbs in commands.VERBS.values()):
        commands.add_all(sub, verb)
    else:
        importlib.import_module("weavectl.testbed_cli").add_parser(sub)
        importlib.import_module("weavectl.demo").add_parser(sub)
        commands.add_all(sub)
    _accept_anywhere(parser, {"--state-dir": {"type": Path, "dest": "state_dir"}})
    return parser


def _state_dir(args: argparse.Namespace) -> Path:
    return args.state_dir or state_dir_from_env()


def launch_config(args: argparse.Namespace):
    """The LaunchConfig `weave launch` was given (LaunchError for what it refuses)."""
    import socket

    from shared.config import LaunchConfig, scope_exposure_problem

    from shared.docker import engine_url

    problem = None if args.no_scope else scope_exposure_problem(args.scope_listen, args.scope_token,
                                                                args.scope_controls)
    if problem is not None:
        raise LaunchError(problem)  # one line: the reason says what to add
    return LaunchConfig(
        state_dir=_state_dir(args), name=args.name, nickname=args.nickname or socket.gethostname(),
        host=args.host, port=args.port, password=args.password or None, peers=tuple(args.peers),
        ipalloc_range=args.ipalloc_range, ipalloc_init=args.ipalloc_init, no_dns=args.no_dns, no_npc=args.no_npc,
        dns_listen_address=args.dns_listen_address, dns_domain=args.dns_domain, dns_ttl=args.dns_ttl,
        no_scope=args.no_scope, scope_listen=args.scope_listen, scope_targets=tuple(args.scope_targets),
        scope_token=args.scope_token or None, scope_controls=args.scope_controls, conn_limit=args.conn_limit,
        no_discovery=args.no_discovery, merge_pages=args.merge_pages,
        trusted_subnets=tuple(s for s in args.trusted_subnets.split(",") if s), datapath=args.datapath,
        bus_port=args.bus_port, otlp_endpoint=args.otlp_endpoint, profile=args.profile,
        docker_host=None if args.no_docker else engine_url(args.docker_host),
        docker_plugin_dir=args.docker_plugin_dir)


def cmd_launch(args: argparse.Namespace) -> int:
    cfg = launch_config(args)
    if args.prepare_only:
        cfg = launcher.prepare(cfg, resume=args.resume)
        print(f"prepared {cfg.state_dir} for peer {cfg.name} ({cfg.nickname})")
        return 0
    if not args.foreground:  # main() hands every other launch to the supervisor
        raise LaunchError("weave launch: neither --prepare-only nor --foreground here (a bug)")
    return launcher.run_foreground(launcher.prepare(cfg, resume=args.resume))


IN_CLI = ("--help", "--prepare-only", "--foreground")
"""`weave launch` options the CLI itself carries out; any other launch is parsed and
checked by the supervisor's process (`launcher.accept_launch`), which imports the
configuration anyway, so the CLI does not (pydantic and the schemas: a seventh of a
second of CPU per launch)."""


def launched_by_supervisor(argv: list[str]) -> bool:
    """A `weave launch` command line with none of IN_CLI (nor a prefix of one, as argparse
    takes them, nor -h)."""
    return not any(word == "-h" or (len(word) > 2 and any(flag.startswith(word) for flag in IN_CLI))
                   for word in argv if word.startswith("-"))


def launch_in_supervisor(argv: list[str]) -> int:
    try:
        reply, seconds = launcher.launch(argv)
    except launcher.UsageError as exc:
        sys.stderr.write(exc.text)
        return exc.code
    print(f"weave launched on {reply['host']} in {seconds:.2f} s: "
          + ", ".join(p["name"] for p in reply["processes"]))
    for note in reply.get("notes", []):
        print(f"note: {note}", file=sys.stderr)
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    state_dir = _state_dir(args)
    if not launcher.stop(state_dir):
        raise LaunchError(f"weave is not running here (state dir {state_dir}): nothing to stop")
    return 0


def cmd_restart(args: argparse.Namespace) -> int:
    extra = {"datapath": args.datapath} if args.datapath else {}
    reply = launcher.restart(_state_dir(args), args.service, extra)
    p = next(p for p in reply.processes if p.name == args.service)
    print(f"{args.service} restarted: pid {p.pid}")
    return 0


def format_services(reply) -> str:
    now = time.time()
    rows = [f"{'SERVICE':<10} {'PID':>7} {'STATE':<9} {'HEALTH':<9} {'RESTARTS':>8} {'UPTIME':>8}"]
    for p in reply.processes:
        up = f"{now - p.started_at:.0f}s" if p.started_at else "-"
        rows.append(f"{p.name:<10} {p.pid or '-':>7} {p.state:<9} {'healthy' if p.healthy else 'unhealthy':<9} "
                    f"{p.restarts:>8} {up:>8}")
    return f"host {reply.host}, supervisor pid {reply.supervisor_pid}\n" + "\n".join(rows)


def cmd_ps_services(args: argparse.Namespace) -> int:
    print(format_services(launcher.ps(_state_dir(args))))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    sys.stdout.write(api.call("GET", f"/status/{args.view}" if args.view else "/status"))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    text = api.call("GET", "/report", accept="application/json")
    if args.template is None:
        sys.stdout.write(text)
        return 0
    from weavectl.gotemplate import TemplateError, render

    try:
        out = render(args.template, json.loads(text))
    except TemplateError as exc:
        raise LaunchError(f"template: {exc}", "fields are those of 'weave report'") from None
    print(out)
    return 0


def cmd_reset(args: argparse.Namespace) -> int:
    """Weave's reset: hand our address ranges to another peer, stop, destroy the bridge and
    container veths, and forget the state (peer name, ring, DNS entries, policies)."""
    import shutil

    state_dir = _state_dir(args)
    if launcher.supervisor_pid(state_dir):
        try:
            api.call("DELETE", "/peer")
        except LaunchError as exc:
            if not args.force:
                raise LaunchError(f"IPAM could not hand over this host's ranges: {exc.reason}",
                                  "use 'weave reset --force' to reset anyway") from None
        launcher.stop(state_dir)
    removed = _datapath_reset()
    if state_dir.exists():
        shutil.rmtree(state_dir)
    print(f"weave reset: removed {', '.join(removed) or 'no devices'} and {state_dir}")
    return 0


def _datapath_reset() -> list[str]:
    """The datapath's devices and weaver's chains, removed by the datapath's own entry
    point (`weave-datapath reset`): the CLI does not import the datapath."""
    import subprocess

    proc = subprocess.run([sys.executable, "-m", "services.datapath.service", "reset"], capture_output=True,
                          text=True, timeout=60)
    if proc.returncode != 0:
        raise LaunchError(f"the datapath could not remove its devices: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout.split()


def cmd_connect(args: argparse.Namespace) -> int:
    form = {"peer": args.peers}
    if args.replace:
        form["replace"] = ["true"]
    sys.stdout.write(api.call("POST", "/connect", form))
    return 0


def cmd_forget(args: argparse.Namespace) -> int:
    sys.stdout.write(api.call("POST", "/forget", {"peer": args.peers}))
    return 0


def cmd_version(_: argparse.Namespace) -> int:
    print(f"weave-py {VERSION} (wire protocol: Weave Net 2.8, mesh protocol version 2)")
    return 0


TRACED = {"attach", "detach", "expose", "hide", "dns-add", "dns-remove", "connect", "forget", "rmpeer",
          "policy", "restart"}


def _container_of(args: argparse.Namespace) -> str:
    """The CONTAINER a command acts on (`weave attach|detach [ADDR...] CONTAINER`), or ""."""
    if args.command in ("attach", "detach") and getattr(args, "args", None):
        return str(args.args[-1])
    return ""


class cli_span:
    """The root span of a command that changes something (one `weave attach`, one trace):
    recorded in the host's trace files when its stack is running here."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args, self.provider, self.span = args, None, None

    def __enter__(self) -> None:
        state_dir = self.args.state_dir or state_dir_from_env()
        if self.args.command not in TRACED or not (state_dir / "launch.json").exists():
            return
        from shared.config import LaunchConfig
        from shared.tracing import setup_tracing, tracer

        launch = LaunchConfig.load(state_dir)
        self.provider = setup_tracing("cli", host=launch.nickname, trace_dir=launch.trace_dir,
                                      endpoint=launch.otlp_endpoint)
        self.span = tracer("weave.cli").start_as_current_span(f"weave {self.args.command}")
        span = self.span.__enter__()
        container = _container_of(self.args)
        if container:  # Scope's page lists a container's traces by it (services/scope/app/traces.py)
            span.set_attribute("weave.container", container)

    def __exit__(self, *exc) -> None:
        if self.span is not None:
            self.span.__exit__(*exc)
            self.provider.shutdown()  # flush: the process is about to exit


COMMANDS = {"launch": cmd_launch, "stop": cmd_stop, "restart": cmd_restart, "ps-services": cmd_ps_services,
            "version": cmd_version, "status": cmd_status, "report": cmd_report, "connect": cmd_connect,
            "forget": cmd_forget, "reset": cmd_reset}


def main(argv: list[str] | None = None) -> int:
    import logging

    logging.getLogger("shared.nats_bus").setLevel(logging.ERROR)  # the CLI says what failed itself
    argv = sys.argv[1:] if argv is None else argv
    if verb_of(argv) == "launch" and launched_by_supervisor(argv):  # parsed by the supervisor
        args, handler = argparse.Namespace(command="launch", state_dir=None), lambda _: launch_in_supervisor(argv)
    else:
        parser = build_parser(verb_of(argv) if "-h" not in argv and "--help" not in argv else None)
        args = parser.parse_args(argv)
        handler = COMMANDS.get(args.command) or args.handler
    try:
        with cli_span(args):
            return handler(args)
    except LaunchError as exc:
        return _fail(args, exc.reason, exc.hint)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # noqa: BLE001 - never a traceback for a user (WEAVE_DEBUG shows it)
        return _unexpected(args, exc)


def _fail(args: argparse.Namespace, reason: str, hint: str = "") -> int:
    print(f"weave {args.command}: {reason}", file=sys.stderr)
    if hint:
        print(f"hint: {hint}", file=sys.stderr)
    return 1


def _unexpected(args: argparse.Namespace, exc: Exception) -> int:
    """An error no command turned into a LaunchError: said in one line, with its kind."""
    if os.environ.get("WEAVE_DEBUG"):
        import traceback
        traceback.print_exc()
    return _fail(args, *describe_error(exc))


if __name__ == "__main__":
    sys.exit(main())
