"""`weave launch` / `stop` / `restart` / `ps-services`: the host stack's life cycle.

launch: state dir, bus token, launch.json, then the supervisor (detached, its own
session), then wait until every process reports healthy. On failure it names the
service, shows the end of its log, and stops what it started: nothing half-made stays.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TypeVar

from shared import subjects
from shared.config import TOKEN_FILE, LaunchConfig
from shared.schemas import Message, Ok, RestartRequest, ServicesReply, ServicesRequest, StopRequest
from weavectl.errors import LaunchError  # noqa: F401 (commands import it from here too)
from weavectl.stack_files import NATS_CONF, PID_FILE, PROCESSES_FILE, write_nats_conf

R = TypeVar("R", bound=Message)
PEER_NAME_PREFIX = b"9oBJ0Jmip-"  # weave:net/uuid.go
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
    """`pid` is alive and is a supervisor or fork server (not a reused pid)."""
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


async def _bus_request(launch: LaunchConfig, subject: str, msg: Message, reply_type: type[R], timeout: float) -> R:
    from shared.nats_bus import NatsBus

    bus = await NatsBus.connect(launch.bus_url, launch.bus_token(), "cli", timeout=min(timeout, 5.0))
    try:
        return await bus.request(subject, msg, reply_type, timeout=timeout)
    finally:
        await bus.close()


def bus_request(state_dir: Path, subject: str, msg: Message, reply_type: type[R], timeout: float = 5.0) -> R:
    """One request on a host's bus, from a synchronous caller (the CLI)."""
    if supervisor_pid(state_dir) is None:
        raise LaunchError(f"weave is not running (state dir {state_dir})", "start it with 'weave launch'")
    return asyncio.run(_bus_request(LaunchConfig.load(state_dir), subject, msg, reply_type, timeout))


def prepare(cfg: LaunchConfig, resume: bool = False) -> LaunchConfig:
    """Write the host's state (launch.json, bus token, nats config) without starting anything:
    what a container deployment (compose, Kubernetes) runs once before its services."""
    if cfg.name is None:
        cfg = cfg.model_copy(update={"name": derive_peer_name()})
    cfg.state_dir.mkdir(parents=True, exist_ok=True)
    if not resume or cfg.peers:  # peers given on a fresh launch replace those of the last run
        (cfg.state_dir / PEERS_FILE).unlink(missing_ok=True)
    if not (cfg.state_dir / TOKEN_FILE).exists() or not resume:
        _write_token(cfg.state_dir)
    cfg.save()
    cfg.log_dir.mkdir(parents=True, exist_ok=True)
    write_nats_conf(cfg)
    return cfg


def launch(cfg: LaunchConfig, timeout: float = 30.0, resume: bool = False) -> ServicesReply:
    if os.geteuid() != 0:
        raise LaunchError("weave launch needs root: it creates network devices and namespaces",
                          "run it with sudo")
    running = supervisor_pid(cfg.state_dir)
    if running:
        raise LaunchError(f"weave is already running here (supervisor pid {running})",
                          "use 'weave stop' first, or 'weave restart <service>'")
    cfg = prepare(cfg, resume)
    ready_r, ready_w = os.pipe()
    try:
        with open(cfg.log_dir / "supervisor.log", "ab") as logf:
            subprocess.Popen([sys.executable, "-m", "weavectl.supervisor", "--state-dir", str(cfg.state_dir),
                              "--ready-fd", str(ready_w)],
                             stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, start_new_session=True,
                             pass_fds=(ready_w,), env=dict(os.environ, WEAVE_STATE_DIR=str(cfg.state_dir)))
    finally:
        os.close(ready_w)
    try:
        return wait_ready(cfg, ready_r, timeout)
    except LaunchError:
        stop(cfg.state_dir)
        raise
    finally:
        os.close(ready_r)


def _write_token(state_dir: Path) -> None:
    path = state_dir / TOKEN_FILE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32))


def wait_ready(cfg: LaunchConfig, ready_fd: int, timeout: float) -> ServicesReply:
    """Read the supervisor's process table from `ready_fd` (the supervisor's --ready-fd:
    a ServicesReply in JSON per line, each time it changes, until every process is
    running and healthy) and return the healthy one. The CLI needs no bus client for
    this (nor its import, a fifth of the CLI's start-up); EOF before it means the
    supervisor exited."""
    import select

    deadline = time.monotonic() + timeout
    last: ServicesReply | None = None
    buf = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([ready_fd], [], [], left)
        if not ready:
            break
        data = os.read(ready_fd, 65536)
        if not data:
            raise LaunchError("the supervisor exited during launch",
                              f"see {cfg.log_dir / 'supervisor.log'}:\n{_tail(cfg.log_dir / 'supervisor.log')}")
        buf += data
        *lines, buf = buf.split(b"\n")
        for line in lines:
            last = ServicesReply.model_validate_json(line)
            if all(p.healthy for p in last.processes):
                return last
    bad = [p.name for p in last.processes if not p.healthy] if last else ["nats"]
    name = bad[0]
    raise LaunchError(f"service {name} did not become healthy within {timeout:g} s"
                      + (f" (also: {', '.join(bad[1:])})" if bad[1:] else ""),
                      f"its log, {cfg.log_dir / (name + '.log')}, ends with:\n{_tail(cfg.log_dir / (name + '.log'))}")


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
    from shared.bus import BusError

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
    of this stack that it never recorded (one started just before it died): the fork
    server and the services forked from it (their command line is the fork server's, with
    this state dir) and nats-server (its config file is in this state dir)."""
    path = state_dir / PROCESSES_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        data = {}
    recorded = [*data.get("processes", {}).values(), data.get("supervisor", 0)]
    pids = {p for p in recorded if p and Path(f"/proc/{p}").exists()} | set(stack_processes(state_dir))
    deadline = time.monotonic() + 3.0
    while pids and time.monotonic() < deadline:  # again: the fork server may fork once more as it dies
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


def restart(state_dir: Path, service: str, args: dict[str, str] | None = None, timeout: float = 20.0) -> ServicesReply:
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


def ps(state_dir: Path) -> ServicesReply:
    return bus_request(state_dir, subjects.supervisor("ps"), ServicesRequest(), ServicesReply)
