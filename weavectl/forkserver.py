"""Services started from a warm parent (issue 15).

`weave launch` starts `python -m weavectl.supervisor`, which begins as the **fork
server**: a plain, single-threaded process with no event loop, which imports every
service module once (`weavectl.preload`, ending in `gc.freeze()` so that collections in
the children leave the shared pages alone), then forks
- the **supervisor** (the asyncio process table, the bus, `weave ps-services`), and
- on the supervisor's request, each **service**, which runs its module's `main()` with
  nothing left to import: a start, a restart or a datapath swap takes milliseconds, and
  the processes share the interpreter, pydantic, OpenTelemetry, nats and their own code
  copy-on-write instead of holding a copy each.

The supervisor talks to the fork server over a socketpair, one JSON object per line:
    supervisor -> server  {"spawn": id, "name", "module", "env", "log"}
    server -> supervisor  {"spawned": id, "pid"}  |  {"exited": pid, "code"}
Services are the fork server's children, so it reaps them and reports each exit (the
code as `asyncio.subprocess` gives it: negative for a signal). When the supervisor
exits, the fork server exits too (services left running, as after a supervisor crash,
are found by `processes.json`). SIGTERM/SIGINT sent to the fork server (e.g. PID 1 of a
container) are passed on to the supervisor.

What this does not change: each service is its own OS process, restarted alone; a kill
of one kills only it. Code changed on disk is picked up by a new launch, not by a restart
of one service (the fork server holds the modules it imported).
"""
from __future__ import annotations

import asyncio
import ctypes
import importlib
import json
import os
import select
import signal
import socket
import sys
from typing import Callable

PRELOAD = "weavectl.preload"


# -- the fork server (no asyncio here) -------------------------------------------------
def serve(run_supervisor: Callable[[socket.socket], int], modules: list[str],
          supervisor_only: tuple[int, ...] = ()) -> int:
    """Preload `modules` (the services this stack runs), fork the supervisor (which calls
    `run_supervisor(sock)`), then serve spawn requests until the supervisor exits;
    returns the supervisor's exit code. `supervisor_only`: fds only the supervisor keeps
    (closed here after the fork, so no service inherits them and their reader sees EOF
    when the supervisor exits)."""
    importlib.import_module(PRELOAD).load(modules)
    ours, theirs = socket.socketpair()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    supervisor = os.fork()
    if supervisor == 0:
        ours.close()
        os.close(wake_r)
        _reset_signals()
        _exit_with(lambda: run_supervisor(theirs))
    theirs.close()
    for fd in supervisor_only:
        os.close(fd)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, _: _forward(supervisor, s))
    return _loop(ours, wake_r, supervisor)


def _loop(sock: socket.socket, wake_r: int, supervisor: int) -> int:
    buf = b""
    while True:
        ready, _, _ = select.select([sock, wake_r], [], [])
        if wake_r in ready:
            os.read(wake_r, 512)
        code = _reap(sock, supervisor)
        if code is not None:
            return code
        if sock in ready:
            data = sock.recv(65536)
            if not data:
                continue  # the supervisor closed its end: its exit comes as SIGCHLD
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                _spawn_one(sock, json.loads(line))


def _reap(sock: socket.socket, supervisor: int) -> int | None:
    """Report every exited service; the supervisor's exit code once it has exited."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return None
        if pid == 0:
            return None
        code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        if pid == supervisor:
            return code
        _send(sock, {"exited": pid, "code": code})


def _spawn_one(sock: socket.socket, req: dict) -> None:
    pid = os.fork()
    if pid == 0:
        sock.close()
        _reset_signals()
        _exit_with(lambda: _service(req["name"], req["module"], req["env"], req["log"]))
    _send(sock, {"spawned": req["spawn"], "pid": pid})


def _send(sock: socket.socket, msg: dict) -> None:
    try:
        sock.sendall(json.dumps(msg).encode() + b"\n")
    except OSError:
        pass  # the supervisor is gone; we exit when its SIGCHLD arrives


def _forward(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _reset_signals() -> None:
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)


def _exit_with(body: Callable[[], int | None]) -> None:
    """Run a forked child's body and leave with its code, never returning into the
    fork server's loop (os._exit: the parent's atexit work is not ours to do)."""
    code = 1
    try:
        code = body() or 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - reported, then the child ends
        import traceback
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _service(name: str, module: str, env: dict[str, str], log_path: str) -> None:
    """The body of a forked service process."""
    os.environ.clear()
    os.environ.update(env)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.argv = [module]
    _set_comm(f"weave-{name}")
    import logging
    for handler in logging.root.handlers[:]:  # the fork server's: the service sets up its own
        logging.root.removeHandler(handler)
    importlib.import_module(module).main()


def _set_comm(name: str) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass


# -- the supervisor's side ------------------------------------------------------------
class ForkedProcess:
    """A service forked by the fork server, with the part of `asyncio.subprocess.Process`
    the supervisor uses (pid, returncode, wait, terminate, kill)."""

    def __init__(self, pid: int, exited: asyncio.Future) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._exited = exited
        exited.add_done_callback(lambda f: setattr(self, "returncode", f.result()))

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)

    def terminate(self) -> None:
        self._signal(signal.SIGTERM)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        if self.returncode is not None:
            raise ProcessLookupError(self.pid)
        os.kill(self.pid, sig)


class ForkClient:
    """The supervisor's end of the socketpair (see the module docstring)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._next = 0
        self._spawning: dict[int, asyncio.Future] = {}
        self._exits: dict[int, asyncio.Future] = {}
        self._reader: asyncio.Task | None = None

    def start(self) -> None:
        self.sock.setblocking(False)
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def spawn(self, name: str, module: str, env: dict[str, str], log_path: str) -> ForkedProcess:
        loop = asyncio.get_running_loop()
        self._next += 1
        done = self._spawning[self._next] = loop.create_future()
        msg = {"spawn": self._next, "name": name, "module": module, "env": env, "log": log_path}
        await loop.sock_sendall(self.sock, json.dumps(msg).encode() + b"\n")
        pid, exited = await done
        return ForkedProcess(pid, exited)

    async def _read(self) -> None:
        loop, buf = asyncio.get_running_loop(), b""
        while True:
            data = await loop.sock_recv(self.sock, 65536)
            if not data:
                return
            buf += data
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                msg = json.loads(line)
                if "spawned" in msg:  # always before that child's "exited" on this stream
                    exited = self._exits[msg["pid"]] = loop.create_future()
                    self._spawning.pop(msg["spawned"]).set_result((msg["pid"], exited))
                else:
                    fut = self._exits.pop(msg["exited"], None)
                    if fut is not None and not fut.done():
                        fut.set_result(msg["code"])
