"""The supervisor keeps each process running: a fork that fails (no memory, no pids
left) is tried again after the backoff, and the other processes are not touched."""
from __future__ import annotations

import asyncio
import errno

from shared.config import LaunchConfig
from weavectl import forkserver, supervisor
from weavectl.supervisor import Proc, Supervisor


class FlakyForks:
    """Refuses the first fork as the kernel would; then 'forks' processes that exit
    when told to. `forked` is set at each successful fork."""

    def __init__(self) -> None:
        self.calls = 0
        self.exits: list[asyncio.Future] = []
        self.forked = asyncio.Event()

    async def spawn(self, name, module, env, log_path):
        self.calls += 1
        if self.calls == 1:
            raise OSError(errno.EAGAIN, "Resource temporarily unavailable")
        fut = asyncio.get_running_loop().create_future()
        self.exits.append(fut)
        self.forked.set()
        return forkserver.ForkedProcess(2 ** 22 + self.calls, fut)  # (never signalled)

    async def next_fork(self) -> None:
        await asyncio.wait_for(self.forked.wait(), 5)
        self.forked.clear()


async def test_a_fork_refused_by_the_kernel_is_tried_again_after_the_backoff(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(supervisor, "BACKOFF_START_S", 0.05)
    forks = FlakyForks()
    sup = Supervisor(LaunchConfig(state_dir=tmp_path), forks)  # type: ignore[arg-type]
    proc = Proc("gossip", [], "services.gossip.service")
    watch = asyncio.create_task(sup._watch(proc))
    await forks.next_fork()
    assert forks.calls == 2 and proc.state == "starting" and proc.pid == 2 ** 22 + 2
    assert "cannot start gossip: [Errno 11] Resource temporarily unavailable" in caplog.text
    forks.exits[-1].set_result(-9)  # and a crash after that is restarted as before
    await forks.next_fork()
    assert forks.calls == 3 and proc.restarts == 1
    sup.stopping.set()
    forks.exits[-1].set_result(0)
    await asyncio.wait_for(watch, 5)
    assert proc.state == "stopped"


def test_nats_server_gets_the_go_settings_unless_the_operator_set_them(tmp_path, monkeypatch):
    monkeypatch.delenv("GOGC", raising=False)
    monkeypatch.setenv("GOMAXPROCS", "4")
    sup = Supervisor(LaunchConfig(state_dir=tmp_path), None)  # type: ignore[arg-type]
    sup._make_procs()
    assert sup.procs["nats"].env == {"GOGC": supervisor.NATS_ENV["GOGC"], "GOMAXPROCS": "4"}
