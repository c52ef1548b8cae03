"""`weave launch` / `stop` / `restart` / `ps-services`: the host stack's life cycle.

launch: the CLI starts the supervisor (detached, its own session) with the launch's
command line; the supervisor's process, which imports pydantic and the configuration
anyway, parses and checks it, writes the state dir, bus token and launch.json
(`accept_launch`), says on the ready pipe whether it took them, then starts the stack;
the CLI waits until every process reports healthy. So `weave launch` itself imports
neither pydantic nor the schemas (a seventh of a second of CPU per launch). On failure
it names the service, shows the end of its log, and stops what it started: nothing
half-made stays.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from shared import subjects
from weavectl.errors import LaunchError  # noqa: F401 (commands import it from here too)
from weavectl.stack_files import NATS_CONF, PID_FILE, PROCESSES_FILE, python_argv, write_nats_conf

if TYPE_CHECKING:
    from shared.config import LaunchConfig
    from shared.schemas import Message, ServicesReply

R = TypeVar("R", bound="Message")
PEER_NAME_PREFIX = b"9oBJ0Jmip-"  # weave:net/uuid.go
ACCEPT_TIMEOUT_S = 60.0  # for the supervisor's first answer (its imports take ~0.3 s)
PEERS_FILE = "gossip-peers.json"  # the gossip service's direct peers (services/gossip/service.py)


def derive_peer_name() -> str:
    """Weave's default: SHA-256(prefix ‖ machine-id ‖ product_uuid), local unicast MAC."""
    def read(path: str) -> bytes:
        try:
            return Path(path).read_bytes().strip()
        except OSError:
            return b""

    machine_id = read("/etc/machine-id") or read("/var/lib/dbus/machine-id")
    digest = hashlib.sha256(PEER_NAME_PREFIX + machine_id + read("/sys/class/dmi/id/product_uuid")).digest()
    mac = bytearray(digest[:6])
    mac[0] = (mac[0] & 0xFE) | 0x02
    return ":".join(f"{b:02x}" for b in mac)


def _is_ours(pid: int) -> bool:
    """`pid` is alive and is a supervisor (not a reused pid)."""
    try:
        return b"weavectl.supervisor" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def supervisor_pid(state_dir: Path) -> int | None:
    """Pid of the live supervisor of this state dir, or None."""
    try:
        pid = int((state_dir / PID_FILE).read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    return pid if b"weavectl.supervisor" in cmdline else None


async def _bus_request(launch: "LaunchConfig", subject: str, msg: "Message", reply_type: type[R],
                       timeout: float) -> R:
    from shared.nats_bus import NatsBus

    bus = await NatsBus.connect(launch.bus_url, launch.bus_token(), "cli", timeout=min(timeout, 5.0))
    try:
        return await bus.request(subject, msg, reply_type, timeout=timeout)
    finally:
        await bus.close()


def bus_request(state_dir: Path, subject: str, msg: "Message", reply_type: type[R], timeout: float = 5.0) -> R:
    """One request on a host's bus, from a synchronous caller (the CLI)."""
    import asyncio

    from shared.config import LaunchConfig

    if supervisor_pid(state_dir) is None:
        raise LaunchError(f"weave is not running (state dir {state_dir})", "start it with 'weave launch'")
    return asyncio.run(_bus_request(LaunchConfig.load(state_dir), subject, msg, reply_type, timeout))


def prepare(cfg: "LaunchConfig", resume: bool = False) -> "LaunchConfig":
    """Write the host's state (launch.json, bus token, nats config) without starting anything:
    what a container deployment (compose, Kubernetes) runs once before its services."""
    if cfg.name is None:
        cfg = cfg.model_copy(update={"name": derive_peer_name()})
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    if not resume or cfg.peers:  # peers given on a fresh launch replace those of the last run
        (cfg.state_dir / PEERS_FILE).unlink(missing_ok=True)
    from shared.config import TOKEN_FILE

    if not (cfg.state_dir / TOKEN_FILE).exists() or not resume:
        _write_token(cfg.state_dir)
    cfg.save()
    cfg.log_dir.mkdir(parents=True, exist_ok=True)
    write_nats_conf(cfg)
    return cfg


def launch(argv: list[str]) -> tuple[dict, float]:
    """`weave launch ARGV...` (the words after the verb, or with it): start the supervisor
    with them and wait for the stack. Returns the healthy process table (the supervisor's
    ServicesReply as JSON) and the seconds from start to healthy."""
    if os.geteuid() != 0:
        raise LaunchError("weave launch needs root: it creates network devices and namespaces",
                          "run it with sudo")
    started = time.monotonic()
    ready_r, ready_w = os.pipe()
    try:
        # stderr is ours until the supervisor has its log (a crash before that is shown here)
        # the command line goes on stdin, not argv: it may hold the password
        proc = subprocess.Popen(python_argv("weavectl.supervisor", "--state-dir", str(_given_state_dir(argv)),
                                            "--launch", "--ready-fd", str(ready_w)),
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True,
                                pass_fds=(ready_w,))
    finally:
        os.close(ready_w)
    with proc.stdin:
        try:
            proc.stdin.write(json.dumps(argv).encode())
        except BrokenPipeError:
            pass  # it died at once: said below
    try:
        return wait_ready(ReadyPipe(ready_r)), time.monotonic() - started
    finally:
        os.close(ready_r)


def _given_state_dir(argv: list[str]) -> Path:
    """--state-dir as given (the last one, by its exact name), else the default. On the
    supervisor's command line it tells the stack's processes apart (`stack_processes`)."""
    from shared.paths import state_dir_from_env

    given = None
    for i, word in enumerate(argv):
        if word == "--state-dir" and i + 1 < len(argv):
            given = argv[i + 1]
        elif word.startswith("--state-dir="):
            given = word.split("=", 1)[1]
    return Path(given) if given is not None else state_dir_from_env()


def run_foreground(cfg: "LaunchConfig") -> int:
    """The supervisor in the calling process (a container's or a systemd unit's main):
    this process becomes the supervisor (it stays PID 1 in a container)."""
    os.execv(sys.executable, python_argv("weavectl.supervisor", "--state-dir", str(cfg.state_dir)))
    return 1  # not reached


class UsageError(Exception):
    """The supervisor refused the launch's command line: argparse's text and exit code."""

    def __init__(self, text: str, code: int) -> None:
        super().__init__(text)
        self.text, self.code = text, code


def accept_launch(ready_fd: int, argv: list[str], parse, configure) -> "LaunchConfig":
    """The supervisor's side of `launch`: parse `argv` (`parse`, argparse), build the
    LaunchConfig (`configure(args)`), check nothing runs there, write the host's state,
    and say so on `ready_fd` as the first line ({"accepted": {...}}, with the notes of
    `launch_notes`); or say why not
    ({"usage": text, "code": 2} or {"error", "hint"}) and exit."""
    import contextlib
    import io

    def say(obj: dict) -> None:
        os.write(ready_fd, json.dumps(obj).encode() + b"\n")

    text = io.StringIO()
    try:
        with contextlib.redirect_stderr(text), contextlib.redirect_stdout(text):
            args = parse(argv)
    except SystemExit as exc:
        say({"usage": text.getvalue(), "code": exc.code if isinstance(exc.code, int) else 2})
        sys.exit(2)
    try:
        cfg = configure(args)
        running = supervisor_pid(cfg.state_dir)
        if running:
            raise LaunchError(f"weave is already running here (supervisor pid {running})",
                              "use 'weave stop' first, or 'weave restart <service>'")
        cfg = prepare(cfg, args.resume)
    except LaunchError as exc:
        say({"error": exc.reason, "hint": exc.hint})
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - said to the CLI in one line, as it would have said it
        from weavectl.errors import describe_error

        if os.environ.get("WEAVE_DEBUG"):  # on the CLI's stderr: this process has no log yet
            import traceback
            traceback.print_exc()
        reason, hint = describe_error(exc)
        say({"error": reason, "hint": hint})
        sys.exit(1)
    say({"accepted": {"state_dir": str(cfg.state_dir), "log_dir": str(cfg.log_dir),
                      "timeout": args.launch_timeout, "notes": launch_notes(cfg)}})
    return cfg


def launch_notes(cfg: "LaunchConfig") -> list[str]:
    """What `weave launch` tells the operator about this launch besides the stack: an
    option that will do nothing on this host yet, and why."""
    if cfg.merge_pages:
        from shared.memory import merge_pages_problem

        problem = merge_pages_problem()
        if problem:
            return [f"--merge-pages: {problem}"]
    return []


def _write_token(state_dir: Path) -> None:
    from shared.config import TOKEN_FILE

    path = state_dir / TOKEN_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32))


def wait_ready(pipe: "ReadyPipe") -> dict:
    """Read the supervisor's `--ready-fd`: first whether it took the launch (see
    `accept_launch`), then its process table (a ServicesReply in JSON per line, each time
    it changes) until every process is running and healthy; return that one. The CLI
    needs no bus client for this, nor pydantic (plain JSON); EOF before it means the
    supervisor exited. On a timeout or an early exit the stack is stopped. The table
    returned carries the launch's "notes" too."""
    first = pipe.line(ACCEPT_TIMEOUT_S)
    if first is None:
        raise LaunchError("the supervisor " + ("exited before it took" if pipe.eof else
                                               f"did not answer for {ACCEPT_TIMEOUT_S:g} s on")
                          + " the launch's arguments", "its error, if any, is above")
    if "usage" in first:
        raise UsageError(first["usage"], first["code"])
    if "error" in first:
        raise LaunchError(first["error"], first.get("hint", ""))
    accepted = first["accepted"]
    state_dir, log_dir = Path(accepted["state_dir"]), Path(accepted["log_dir"])
    timeout = float(accepted["timeout"])
    deadline = time.monotonic() + timeout
    last: dict | None = None
    try:
        while True:
            reply = pipe.line(deadline - time.monotonic())
            if reply is None:
                break
            last = reply
            if all(p["healthy"] for p in last["processes"]):
                return {**last, "notes": accepted.get("notes", [])}
        if pipe.eof:
            raise LaunchError("the supervisor exited during launch",
                              f"see {log_dir / 'supervisor.log'}:\n{_tail(log_dir / 'supervisor.log')}")
        bad = [p["name"] for p in last["processes"] if not p["healthy"]] if last else ["nats"]
        name = bad[0]
        raise LaunchError(f"service {name} did not become healthy within {timeout:g} s"
                          + (f" (also: {', '.join(bad[1:])})" if bad[1:] else ""),
                          f"its log, {log_dir / (name + '.log')}, ends with:\n{_tail(log_dir / (name + '.log'))}")
    except LaunchError:
        stop(state_dir)
        raise


class ReadyPipe:
    """The reading end of a supervisor's --ready-fd: one JSON object per line."""

    def __init__(self, fd: int) -> None:
        self.fd, self.eof, self._buf, self._lines = fd, False, b"", []

    def line(self, timeout: float) -> dict | None:
        """The next object, or None at EOF (`eof` set) or after `timeout` seconds."""
        import select

        deadline = time.monotonic() + timeout
        while not self._lines and not self.eof:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return None
            data = os.read(self.fd, 65536)
            if not data:
                self.eof = True
                break
            *lines, self._buf = (self._buf + data).split(b"\n")
            self._lines.extend(lines)
        return json.loads(self._lines.pop(0)) if self._lines else None


def _tail(path: Path, lines: int = 8) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def stop(state_dir: Path, timeout: float = 15.0) -> bool:
    """Stop a host's stack; returns False if nothing was running. Never leaves a process."""
    pid = supervisor_pid(state_dir)
    if pid is None:
        _kill_recorded(state_dir)
        return False
    import asyncio

    from shared.bus import BusError
    from shared.config import LaunchConfig
    from shared.schemas import Ok, StopRequest

    try:
        asyncio.run(_bus_request(LaunchConfig.load(state_dir), subjects.supervisor("stop"), StopRequest(), Ok, 3.0))
    except (BusError, OSError):
        os.kill(pid, signal.SIGTERM)  # the bus is gone: ask the supervisor directly
    deadline = time.monotonic() + timeout
    while supervisor_pid(state_dir) == pid and time.monotonic() < deadline:
        time.sleep(0.05)
    if supervisor_pid(state_dir) == pid:
        os.kill(pid, signal.SIGKILL)
    _kill_recorded(state_dir)
    return True


def _kill_recorded(state_dir: Path) -> None:
    """SIGKILL what a dead supervisor left: every pid in processes.json, and every process
    of this stack that it never recorded (one started just before it died): the services
    forked from it (their command line is the supervisor's, with this state dir) and
    nats-server (its config file is in this state dir)."""
    path = state_dir / PROCESSES_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    recorded = [*data.get("processes", {}).values(), data.get("supervisor", 0)]
    pids = {p for p in recorded if p and Path(f"/proc/{p}").exists()} | set(stack_processes(state_dir))
    deadline = time.monotonic() + 3.0
    while pids and time.monotonic() < deadline:  # again: a dying supervisor may fork once more
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
        pids = set(stack_processes(state_dir))
    path.unlink(missing_ok=True)
    (state_dir / PID_FILE).unlink(missing_ok=True)


def stack_processes(state_dir: Path) -> list[int]:
    """Pids of the processes this state dir's stack runs, found by command line, among
    the processes of our network and PID namespaces (not another host's of the testbed,
    nor a stack in containers)."""
    dirs = {str(state_dir), str(state_dir.resolve())}
    confs = {str(Path(d) / NATS_CONF) for d in dirs}
    ours_ns = _namespaces("self")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            argv = [a.decode(errors="replace") for a in (entry / "cmdline").read_bytes().split(b"\0")]
            if _namespaces(entry.name) != ours_ns:
                continue
        except OSError:
            continue
        ours = ("weavectl.supervisor" in argv and any(a in dirs for a in argv)) or \
            (argv[0].endswith("nats-server") and any(a in confs for a in argv))
        if ours:
            found.append(int(entry.name))
    return found


def _namespaces(pid: str) -> tuple[int, int]:
    return os.stat(f"/proc/{pid}/ns/net").st_ino, os.stat(f"/proc/{pid}/ns/pid").st_ino


def restart(state_dir: Path, service: str, args: dict[str, str] | None = None,
            timeout: float = 20.0) -> "ServicesReply":
    from shared.config import LaunchConfig
    from shared.schemas import RestartRequest, ServicesReply, ServicesRequest

    before = bus_request(state_dir, subjects.supervisor("ps"), ServicesRequest(), ServicesReply)
    old = {p.name: p.pid for p in before.processes}
    if service not in old:
        raise LaunchError(f"no service {service!r} on this host", f"choose one of: {', '.join(old)}")
    bus_request(state_dir, subjects.supervisor("restart"), RestartRequest(service=service, args=args or {}),
                ServicesReply)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        reply = bus_request(state_dir, subjects.supervisor("ps"), ServicesRequest(), ServicesReply)
        p = next(p for p in reply.processes if p.name == service)
        if p.pid and p.pid != old[service] and p.healthy:
            return reply
        time.sleep(0.1)
    raise LaunchError(f"{service} did not come back healthy within {timeout:g} s",
                      f"see {LaunchConfig.load(state_dir).log_dir / (service + '.log')}")


def ps(state_dir: Path) -> "ServicesReply":
    from shared.schemas import ServicesReply, ServicesRequest

    return bus_request(state_dir, subjects.supervisor("ps"), ServicesRequest(), ServicesReply)
