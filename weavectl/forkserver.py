"""Services started from a warm parent (issue 15).

`weave launch` starts `python -m weavectl.supervisor`, which imports every module of the
services it will run once (`weavectl.preload`, each module's objects then frozen out of
later collections with `gc.freeze()`, so that collections in the children leave the
shared pages alone), then runs the supervisor (its asyncio loop, the process table, the
bus) in the same process, and **forks** each service from it: a start, a restart or a
datapath swap takes milliseconds, and the processes share the interpreter, pydantic,
OpenTelemetry, nats and their own code copy-on-write instead of holding a copy each.
nats-server is forked and exec'd the same way.

Until December 2026 a separate fork server (a single-threaded process with no event
loop) did the forking on the supervisor's request. Every page each child copies from
the preloaded heap stayed in that process too, for the next fork: 7.6 MB of pages no one
used, plus the supervisor's own copy of them (docs/decisions.md, issue 15). Forking from
the supervisor itself keeps one copy. What a child must leave behind is done in
`_leave_the_supervisor`, right after the fork:
- signal handlers and the loop's wake-up fd go back to the defaults;
- every descriptor above stderr is pointed at /dev/null (not closed: an object of the
  supervisor's that closes its descriptor later closes /dev/null, never a descriptor
  the service has opened meanwhile), so that nats-server's connection, the pipe
  `weave launch` reads and the loop's own descriptors end with the supervisor;
- the supervisor's objects are frozen out of the child's collections;
- OpenTelemetry forgets the supervisor's tracer provider (a process may set it once);
  the supervisor's span processor forgets its queue, its loop and any export thread in
  the child (shared/tracing.QuietBatchSpanProcessor);
- the service runs in a fresh contextvars context (not inside the supervisor's span).
The supervisor runs no other thread: its spans go to the trace file from its loop (with an
OTLP endpoint, from an export thread that holds no lock while it sleeps); nats-server is not started through asyncio's child watcher (a thread per
child): every child is reaped here, on SIGCHLD.

What this does not change: each service is its own OS process, restarted alone; a kill
of one kills only it. Code changed on disk is picked up by a new launch, not by a restart
of one service (the supervisor holds the modules it imported).
"""
from __future__ import annotations

import asyncio
import contextvars
import ctypes
import gc
import importlib
import os
import signal
import sys
from typing import Callable

PRELOAD = "weavectl.preload"


def serve(run_supervisor: Callable[["Forker"], int], modules: list[str]) -> int:
    """Preload `modules` (the services this stack runs), then run the supervisor here,
    starting its processes with a `Forker`; returns its exit code."""
    importlib.import_module(PRELOAD).load(modules)
    return run_supervisor(Forker())


class ForkedProcess:
    """A process forked by the Forker, with the part of `asyncio.subprocess.Process` the
    supervisor uses (pid, returncode, wait, terminate, kill)."""

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


class Forker:
    """Forks the supervisor's processes from its own, on its event loop; reaps them all
    on SIGCHLD (exit codes as `asyncio.subprocess` gives them: negative for a signal).
    It reaps every child of this process, so nothing else here may start one through
    asyncio's subprocesses (whose watcher would find its child gone)."""

    def __init__(self) -> None:
        self._exits: dict[int, asyncio.Future] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_signal_handler(signal.SIGCHLD, self._reap)

    async def spawn(self, name: str, module: str, env: dict[str, str], log_path: str) -> ForkedProcess:
        """A service: its module's `main()` in a forked child."""
        return self._fork(lambda: _service(name, module, env, log_path))

    async def spawn_exec(self, argv: list[str], env: dict[str, str], log_path: str) -> ForkedProcess:
        """A program (nats-server): forked, then exec'd."""
        return self._fork(lambda: _exec(argv, env, log_path))

    def _fork(self, body: Callable[[], int | None]) -> ForkedProcess:
        pid = os.fork()
        if pid == 0:  # (whatever happens in here ends in os._exit, never in the supervisor's loop)
            _exit_with(lambda: _leave_the_supervisor() or contextvars.Context().run(body))
        # (SIGCHLD is handled on the loop, after this returns: the future is there first)
        exited = self._exits[pid] = self._loop.create_future()
        return ForkedProcess(pid, exited)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            fut = self._exits.pop(pid, None)
            if fut is not None and not fut.done():
                fut.set_result(code)


# -- in the child, right after the fork ------------------------------------------------
def _leave_the_supervisor() -> None:
    """What a forked child must not keep of the supervisor (module docstring)."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    null = os.open(os.devnull, os.O_RDWR)
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd != null:
            try:
                os.dup2(null, fd, inheritable=False)
            except OSError:
                pass  # the directory listing's own descriptor, gone already
    os.close(null)
    gc.freeze()
    from shared.tracing import forget_tracer_provider

    forget_tracer_provider()


def _exit_with(body: Callable[[], int | None]) -> None:
    """Run a forked child's body and leave with its code, never returning into the
    supervisor's loop (os._exit: the parent's atexit work is not ours to do)."""
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


def _redirect(log_path: str) -> None:
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)


def _service(name: str, module: str, env: dict[str, str], log_path: str) -> None:
    """The body of a forked service process."""
    os.environ.clear()
    os.environ.update(env)
    _redirect(log_path)
    sys.argv = [module]
    _set_comm(f"weave-{name}")
    import logging
    for handler in logging.root.handlers[:]:  # the supervisor's: the service sets up its own
        logging.root.removeHandler(handler)
    importlib.import_module(module).main()


def _exec(argv: list[str], env: dict[str, str], log_path: str) -> None:
    _redirect(log_path)
    os.execve(argv[0], argv, env)


def _set_comm(name: str) -> None:
    try:
        ctypes.CDLL(None, use_errno=True).prctl(15, name.encode()[:15], 0, 0, 0)  # PR_SET_NAME
    except (OSError, AttributeError):
        pass
