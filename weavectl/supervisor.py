"""A host's process supervisor: nats-server plus one OS process per service.

Started detached by `weave launch`; lives until `weave stop` (bus request
`weave.supervisor.stop`) or SIGTERM. Rules:
- nats-server starts first (loopback, token from the state dir); services may start
  before it accepts connections: they retry (no start-order coupling).
- A process that dies is restarted after a backoff (0.5 s doubling to 10 s; reset once
  it has run 30 s); the others are not touched.
- `weave.supervisor.restart` restarts one process on purpose, at once, optionally with
  launch config overrides (another datapath mode: LaunchConfig.RESTART_OVERRIDES),
  passed as the WEAVE_OVERRIDE_* variables shared.config reads.
- Services are forked from this process, which imported their modules once before
  its loop started (weavectl/forkserver.py): a start or restart takes milliseconds;
  nats-server is forked and exec'd.
- Health is asked when someone wants it (`weave.supervisor.ps`, which `weave launch`
  polls until the stack is healthy): each service by `weave.<svc>.health`, nats by a
  TCP connect. Nothing polls while all is idle.
- `processes.json` in the state dir always names every live pid, so a crashed
  supervisor's children can still be found and stopped by pid.
"""
from __future__ import annotations

if __name__ == "__main__":  # the preloading supervisor: dataclasses' methods from compiled code
    from weavectl import compiled_once

    compiled_once.install()

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from shared import subjects
from shared.bus import BusError
from shared.config import LaunchConfig
from shared.schemas import (HealthReply, HealthRequest, Ok, RestartRequest, ServiceProcess, ServicesReply,
                            ServicesRequest, StopRequest)
from shared.memory import fix_mmap_threshold
from shared.service import setup_logging
from shared.tracing import setup_tracing
from weavectl import forkserver
from weavectl.errors import LaunchError
from weavectl.stack_files import (NATS_CONF, PID_FILE, PROCESSES_FILE, nats_server_path,  # noqa: F401
                                  python_argv, write_nats_conf)
from weavectl.services import service_module

log = logging.getLogger("weave.supervisor")
BACKOFF_START_S, BACKOFF_MAX_S, BACKOFF_RESET_AFTER_S = 0.5, 10.0, 30.0
STOP_GRACE_S = 5.0
HEALTH_TIMEOUT_S = 1.0
READY_POLL_S = 0.05  # while `weave launch` waits for the stack
NATS_ENV = {"GOGC": "50", "GOMAXPROCS": "1"}
"""nats-server's Go heap grows to 1.5x what is live between collections, not 2x: under a
stack's bus traffic it held 8.4 MB PSS instead of 10.4 (5.1 MB private, not 7.1), for
GC work too small to see at the bus's rates. (GOMEMLIMIT, lower still, would make the
collector thrash while an 8 MB Scope report is in flight.) One P (GOMAXPROCS=1): a bus of
one host's loopback clients, which are Python and slower than it, never needs more; at
rest it woke 13 times a second instead of 23-24 (0.035 s CPU per 30 s, not 0.046-0.059)
and held 2.9 MB private, not 3.6, and on a node with many cores the default would give
it a P, an OS thread and a cache per core. Request/reply p50 stayed at 0.31-0.34 ms.
Set in the supervisor's own environment, either wins over these."""
NATS_START_S = 5.0  # how long services wait for nats-server to listen before they start anyway
FORK = os.environ.get("WEAVE_FORKSERVER", "1") != "0"
"""Services are forked from the supervisor's preloaded process (weavectl/forkserver.py);
WEAVE_FORKSERVER=0 execs each one as `python -m <module>` instead (slower, more memory;
for debugging)."""


def _installed(name: str) -> bool:
    """Whether the service's module exists in this installation (a stack built before
    the Scope app existed runs the rest without it)."""
    import importlib.util

    try:
        return importlib.util.find_spec(service_module(name)) is not None
    except ModuleNotFoundError:
        return False


def services_for(launch: LaunchConfig) -> list[str]:
    """The services `weave launch` starts, in SERVICES order: all, less those switched
    off (--no-dns, --no-npc, --no-scope: the Scope probe and app; the Docker plugin runs
    only where launch found a Docker engine, see --docker-host / --no-docker)."""
    off = {"dns"} if launch.no_dns else set()
    off |= {"docker-plugin"} if not launch.docker_host else set()
    off |= {"npc"} if launch.no_npc else set()
    off |= {"scope-probe", "scope-app"} if launch.no_scope else set()
    return [s for s in subjects.SERVICES if s not in off and _installed(s)]


@dataclass
class Proc:
    name: str
    argv: list[str]
    """What to exec for a process that is not forked (nats-server, or any service when
    forking is off)."""
    module: str = ""
    """A service's module, forked from the supervisor ('' for nats-server)."""
    env: dict[str, str] = field(default_factory=dict)
    process: "asyncio.subprocess.Process | forkserver.ForkedProcess | None" = None
    state: str = "starting"
    restarts: int = 0
    started_at: float = 0.0
    healthy: bool = False
    restart_now: bool = False

    @property
    def pid(self) -> int:
        return self.process.pid if self.process and self.process.returncode is None else 0


class Supervisor:
    def __init__(self, launch: LaunchConfig, forks: "forkserver.Forker | None" = None,
                 ready_fd: int | None = None) -> None:
        """`ready_fd`: where `weave launch` waits for the stack (see `_tell_ready`)."""
        self.ready_fd = ready_fd
        """`forks`: starts processes by forking this one; None: exec each one."""
        self.launch = launch
        self.forks = forks
        self.incarnation = _incarnation(os.getpid())
        """This run of the stack (pid and start time): services that keep state per run
        (dns) tell a restart of their own from a new run of the stack by it."""
        self.procs: dict[str, Proc] = {}
        self.stopping = asyncio.Event()
        self.bus = None

    # -- process table -----------------------------------------------------------
    def _make_procs(self) -> None:
        conf = self.launch.state_dir / NATS_CONF
        env = {name: os.environ.get(name, value) for name, value in NATS_ENV.items()}  # the operator's first
        self.procs["nats"] = Proc("nats", [nats_server_path(), "-c", str(conf)], env=env)
        for svc in services_for(self.launch):
            self.procs[svc] = Proc(svc, python_argv(service_module(svc)), service_module(svc))


    def _record_pids(self) -> None:
        data = {"supervisor": os.getpid(), "processes": {p.name: p.pid for p in self.procs.values() if p.pid}}
        tmp = self.launch.state_dir / (PROCESSES_FILE + ".tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self.launch.state_dir / PROCESSES_FILE)

    async def _spawn(self, proc: Proc) -> None:
        self.launch.log_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, WEAVE_STATE_DIR=str(self.launch.state_dir),
                   WEAVE_INCARNATION=self.incarnation, **proc.env)
        log_path = self.launch.log_dir / f"{proc.name}.log"
        if self.forks is not None:  # (nats-server too: not through asyncio's child watcher, the Forker reaps)
            proc.process = await (self.forks.spawn(proc.name, proc.module, env, str(log_path)) if proc.module
                                  else self.forks.spawn_exec(proc.argv, env, str(log_path)))
        else:
            with open(log_path, "ab") as logf:
                proc.process = await asyncio.create_subprocess_exec(
                    *proc.argv, stdin=asyncio.subprocess.DEVNULL, stdout=logf, stderr=logf, env=env,
                    start_new_session=False)
        proc.started_at, proc.state, proc.healthy = time.time(), "starting", False
        self._record_pids()
        log.info("started %s (pid %d)", proc.name, proc.process.pid)

    async def _watch(self, proc: Proc) -> None:
        """Keep `proc` running until the supervisor stops."""
        backoff = BACKOFF_START_S
        while not self.stopping.is_set():
            try:
                await self._spawn(proc)
            except OSError as exc:  # no fork or exec now (out of memory or pids): try again later
                proc.process = None
                log.error("cannot start %s: %s; trying again in %.1f s", proc.name, exc, backoff)
            else:
                code = await proc.process.wait()
                self._record_pids()
                if self.stopping.is_set():
                    break
                ran = time.time() - proc.started_at
                proc.restarts += 1
                proc.healthy = False
                if proc.restart_now:
                    proc.restart_now = False
                    log.info("%s restarted on request", proc.name)
                    continue
                backoff = BACKOFF_START_S if ran >= BACKOFF_RESET_AFTER_S else backoff
                log.warning("%s (pid %s) exited with %s after %.1f s; restarting in %.1f s",
                            proc.name, proc.process.pid, code, ran, backoff)
            proc.state = "backoff"
            try:
                await asyncio.wait_for(self.stopping.wait(), backoff)
            except asyncio.TimeoutError:
                pass
            backoff = min(backoff * 2, BACKOFF_MAX_S)
        proc.state = "stopped"

    # -- health ------------------------------------------------------------------
    async def _check(self, proc: Proc) -> None:
        if not proc.pid:
            return
        if proc.name == "nats":
            proc.healthy = await _port_open("127.0.0.1", self.launch.bus_port)
        else:
            try:
                reply = await self.bus.request(subjects.health(proc.name), HealthRequest(), HealthReply,
                                               timeout=HEALTH_TIMEOUT_S)
                proc.healthy = reply.healthy and reply.pid == proc.pid
            except BusError:
                proc.healthy = False
        if proc.healthy and proc.state == "starting":
            proc.state = "running"

    # -- bus API -----------------------------------------------------------------
    async def _on_ps(self, _: ServicesRequest) -> ServicesReply:
        """The process table, each process's health asked now (in parallel, 1 s at most):
        health is checked when someone wants to know, never on a timer (idle means
        asleep: a 1 s poll woke every service and nats-server 5 times a second)."""
        await asyncio.gather(*(self._check(p) for p in self.procs.values()))
        return ServicesReply(host=self.launch.nickname, supervisor_pid=os.getpid(), processes=tuple(
            ServiceProcess(name=p.name, pid=p.pid, state=p.state, healthy=p.healthy, restarts=p.restarts,
                           started_at=p.started_at if p.pid else 0.0) for p in self.procs.values()))

    async def _on_restart(self, req: RestartRequest) -> ServicesReply:
        proc = self.procs.get(req.service)
        if proc is None:
            raise BusError("not_found", f"no service {req.service!r} on this host; "
                                        f"known: {', '.join(self.procs)}")
        try:
            overrides = LaunchConfig.override_environment(req.args)
            self.launch.with_overrides(overrides)  # a value the field refuses is refused here, not at start
        except ValidationError as exc:
            raise BusError("bad_request", f"restart {req.service}: {exc.errors()[0]['msg']}")
        except ValueError as exc:
            raise BusError("bad_request", f"restart {req.service}: {exc}")
        proc.env.update(overrides)
        proc.restart_now = True
        if proc.pid:
            await _terminate(proc.process)
        return await self._on_ps(ServicesRequest())

    async def _on_stop(self, _: StopRequest) -> Ok:
        asyncio.get_running_loop().call_later(0.05, self.stopping.set)
        return Ok()

    async def _tell_ready(self, fd: int) -> None:
        """For `weave launch`: the process table (a ServicesReply in JSON, one per line)
        each time it changes, asked every READY_POLL_S, until every process is running
        and healthy or the reader is gone; then the fd is closed. Only while launching:
        afterwards health is asked on demand only."""
        last = b""
        try:
            while not self.stopping.is_set():
                reply = await self._on_ps(ServicesRequest())
                line = reply.model_dump_json().encode() + b"\n"
                if line != last:
                    os.write(fd, line)
                    last = line
                if all(p.healthy for p in reply.processes):
                    return
                await asyncio.sleep(READY_POLL_S)
        except OSError:
            pass  # the CLI is gone (it gave up, or was killed): nothing more to tell
        finally:
            os.close(fd)

    # -- lifecycle ---------------------------------------------------------------
    async def run(self) -> None:
        from shared.nats_bus import NatsBus

        (self.launch.state_dir / PID_FILE).write_text(str(os.getpid()))
        write_nats_conf(self.launch)
        if self.forks is not None:
            self.forks.start()
        self._make_procs()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        watchers = [asyncio.create_task(self._watch(self.procs["nats"]))]
        await _wait_port("127.0.0.1", self.launch.bus_port, NATS_START_S)  # (a bus client retries slower)
        watchers += [asyncio.create_task(self._watch(p)) for n, p in self.procs.items() if n != "nats"]
        self.bus = await NatsBus.connect(self.launch.bus_url, self.launch.bus_token(), "supervisor", timeout=30)
        await self.bus.serve(subjects.supervisor("ps"), ServicesRequest, self._on_ps)
        await self.bus.serve(subjects.supervisor("restart"), RestartRequest, self._on_restart)
        await self.bus.serve(subjects.supervisor("stop"), StopRequest, self._on_stop)
        if self.ready_fd is not None:
            watchers.append(asyncio.create_task(self._tell_ready(self.ready_fd)))
        await self.stopping.wait()
        await self._shutdown(watchers)

    async def _shutdown(self, tasks: list[asyncio.Task]) -> None:
        log.info("stopping the stack")
        services = [p for n, p in self.procs.items() if n != "nats" and p.pid]
        await asyncio.gather(*(_terminate(p.process) for p in services))
        try:
            await self.bus.close()
        except Exception:  # the bus may already be gone; nothing to save
            pass
        if self.procs["nats"].pid:
            await _terminate(self.procs["nats"].process)
        await asyncio.gather(*tasks, return_exceptions=True)
        for name in (PROCESSES_FILE, PID_FILE):
            (self.launch.state_dir / name).unlink(missing_ok=True)
        log.info("stack stopped")


def _incarnation(pid: int) -> str:
    try:
        start = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        start = "?"
    return f"{pid}:{start}"


async def _terminate(process: asyncio.subprocess.Process) -> None:
    """SIGTERM, then SIGKILL after STOP_GRACE_S."""
    if process.returncode is not None:
        return
    try:
        process.terminate()
        await asyncio.wait_for(process.wait(), STOP_GRACE_S)
    except ProcessLookupError:
        return
    except asyncio.TimeoutError:
        process.kill()
        await process.wait()


async def _wait_port(host: str, port: int, timeout: float) -> bool:
    """Poll until something accepts on host:port (nats-server starts in milliseconds)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await _port_open(host, port):
            return True
        await asyncio.sleep(0.005)
    return False


async def _port_open(host: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 0.5)
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    return True


def _accept_launch(argv: list[str], state_dir: Path, ready_fd: int) -> LaunchConfig:
    """`weave launch` handed over by the CLI (launcher.launch): parse and check its command
    line here, where pydantic and the configuration are imported anyway, write the host's
    state, then send this process's output to its log."""
    from weavectl import cli, launcher

    def configure(args) -> LaunchConfig:
        cfg = cli.launch_config(args)
        if cfg.state_dir.resolve() != state_dir.resolve():  # the CLI found it by the exact flag
            raise LaunchError(f"the state dir is {state_dir}, not {cfg.state_dir}: give --state-dir in full")
        return cfg

    cfg = launcher.accept_launch(ready_fd, argv, lambda words: cli.build_parser("launch").parse_args(words),
                                 configure)
    log = os.open(cfg.log_dir / "supervisor.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.environ["WEAVE_STATE_DIR"] = str(cfg.state_dir)
    return cfg


def _merge_pages() -> None:
    from shared.memory import merge_pages, merge_pages_problem

    problem = merge_pages() or merge_pages_problem()
    if problem:
        log.warning("--merge-pages: %s", problem)
    else:
        log.info("--merge-pages: the stack's identical pages are merged by the kernel (KSM)")


def _supervise(launch: LaunchConfig, forks: "forkserver.Forker | None", ready_fd: int | None = None) -> int:
    setup_tracing("supervisor", host=launch.nickname, trace_dir=launch.trace_dir, endpoint=launch.otlp_endpoint)
    asyncio.run(Supervisor(launch, forks, ready_fd).run())
    return 0


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="weave-supervisor")
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--ready-fd", type=int, help="write the process table here until the stack is healthy "
                                                     "(weave launch waits on it)")
    parser.add_argument("--launch", action="store_true", help="read a `weave launch` command line (JSON list) on "
                        "stdin, parse, check and prepare it first; the answer goes to --ready-fd")
    args = parser.parse_args(argv)
    if args.launch:
        _accept_launch(json.loads(sys.stdin.buffer.read() or b"[]"), args.state_dir, args.ready_fd)
    setup_logging("supervisor")
    launch = LaunchConfig.load(args.state_dir)
    fix_mmap_threshold()  # for the supervisor's own heap (each service sets it again at its entry)
    if launch.merge_pages:  # before the preload: every process forked or exec'd from here inherits it
        _merge_pages()
    if not FORK:
        from weavectl import compiled_once

        compiled_once.finish()
        sys.exit(_supervise(launch, None, args.ready_fd))
    modules = [service_module(name) for name in services_for(launch)]
    sys.exit(forkserver.serve(lambda forks: _supervise(launch, forks, args.ready_fd), modules))


if __name__ == "__main__":
    main()
