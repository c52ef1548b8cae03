"""Putting the desired NPCState into the kernel: iptables-save/-restore and ipset save/restore.

`Netfilter` is the blocking half (call it through asyncio.to_thread): read the filter
table and the sets, plan (plan.py), and feed the three scripts on stdin, in order:
`ipset restore -exist`, `iptables-restore --noflush -w`, `ipset restore -exist`. The
planner orders them so that every intermediate state is at least as tight as the old
or the new policies (iptables-restore commits atomically; an ipset script that stops
half way has only tightened, or only loosened towards the new state). After any
failure the state is read again before planning: never patch from a guess.

`Enforcer` is the asyncio half: one task that syncs when the desired state changes,
again every `resync_s` (which repairs chains or sets flushed by hand), and
after a failure with a doubling backoff, counting each failure.

Backend and tool running: shared/netfilter_tools.py (the datapath uses them too).
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from shared.errors import WeaveError
from shared.netfilter_tools import Backend, RunResult, Runner, detect_backend, run_command  # noqa: F401 (re-exported)

from .ipset import IPSet, parse_ipset_save
from .iptables import Rule, parse_iptables_save
from .plan import Plan, plan_update
from .state import NPCState

log = logging.getLogger("weave.npc.apply")


class ApplyError(WeaveError):
    """One step failed; `step` names it, `stderr` is the tool's complaint."""

    code = "enforcement_failed"

    def __init__(self, step: str, stderr: str) -> None:
        super().__init__(f"{step} failed: {stderr.strip()[:500]}", step=step, stderr=stderr)
        self.step, self.stderr = step, stderr


@dataclass(frozen=True)
class SyncResult:
    plan: Plan
    read_s: float
    apply_s: float

    @property
    def changed(self) -> bool:
        return not self.plan.empty


class Netfilter:
    """weave-npc's chains and sets in the calling process's network namespace. Blocks."""

    def __init__(self, backend: Backend | None = None, run: Runner = run_command) -> None:
        self.run = run
        self.backend = backend or detect_backend(run)
        self._known: tuple[dict[str, list[Rule]], dict[str, IPSet]] | None = None

    def read(self) -> tuple[dict[str, list[Rule]], dict[str, IPSet]]:
        chains = parse_iptables_save(self._ok("iptables-save", [self._tool("save"), "-t", "filter"]))
        sets = parse_ipset_save(self._ok("ipset save", ["ipset", "save"]))
        return chains, sets

    def apply(self, plan: Plan) -> None:
        """Raises ApplyError naming the step that failed; earlier steps stay applied."""
        if plan.ipset_before:
            self._ok("ipset restore (before)", ["ipset", "restore", "-exist"], plan.ipset_before)
        if plan.iptables:
            self._ok("iptables-restore", [self._tool("restore"), "--noflush", "-w", "5"], plan.iptables)
        if plan.ipset_after:
            self._ok("ipset restore (after)", ["ipset", "restore", "-exist"], plan.ipset_after)

    def sync(self, desired: NPCState, fresh: bool = True) -> SyncResult:
        """Bring the kernel to `desired`. `fresh=False` plans from the state the last
        successful sync left (skipping the read) when there is one: right unless
        someone changed the kernel since, which the next fresh sync repairs (and a
        failure always forgets it, so the retry reads)."""
        started = time.perf_counter()
        if fresh or self._known is None:
            self._known = None
            chains, sets = self.read()
        else:
            chains, sets = self._known
        plan = plan_update(desired, chains, sets)
        planned = time.perf_counter()
        self._known = None
        self.apply(plan)
        hooks = {name: list(rules) for name, rules in desired.hooks.items()}
        self._known = ({**{n: list(r) for n, r in desired.chains.items()}, **hooks}, dict(desired.ipsets))
        return SyncResult(plan, planned - started, time.perf_counter() - planned)

    def _tool(self, verb: str) -> str:
        return f"iptables-{self.backend.value}-{verb}"

    def _ok(self, step: str, argv: list[str], stdin: str | None = None) -> str:
        result = self.run(argv, stdin)
        if result.returncode != 0:
            raise ApplyError(step, result.stderr or f"exit status {result.returncode}")
        return result.stdout


@dataclass(frozen=True)
class EnforcerConfig:
    """The Enforcer's timers (NpcSettings' resync_s, retry_initial_s, retry_max_s)."""

    resync_s: float
    retry_initial_s: float
    retry_max_s: float


class Enforcer:
    """Keeps the kernel at `desired()`; `kick()` after anything that changes it.

    `desired` runs on the event loop (the compiler is not thread-safe); reading and
    writing the kernel run in a thread. `generation` counts kicks, `applied` is the
    generation of the last state that reached the kernel.
    """

    def __init__(self, netfilter: Netfilter, desired: Callable[[], NPCState], config: EnforcerConfig,
                 on_error: Callable[[ApplyError], None] = lambda exc: None) -> None:
        self.netfilter, self.desired, self.config, self.on_error = netfilter, desired, config, on_error
        self.generation = 1
        self.applied = 0
        self.synced = False
        self.errors = 0
        self.last_sync_unix = 0.0
        self.last_state: NPCState | None = None
        self._wake = asyncio.Event()
        self._done = asyncio.Condition()

    def kick(self) -> None:
        self.generation += 1
        self._wake.set()

    async def wait_applied(self, generation: int | None = None) -> None:
        """Until the kernel holds the state of `generation` (default: the current one)."""
        target = self.generation if generation is None else generation
        async with self._done:
            await self._done.wait_for(lambda: self.applied >= target)

    async def run(self) -> None:
        backoff = self.config.retry_initial_s
        fresh = True
        while True:
            generation = self.generation
            self._wake.clear()
            ok = await self._attempt(generation, fresh)
            if ok:
                backoff = self.config.retry_initial_s
                delay = self.config.resync_s
            else:
                delay, backoff = backoff, min(backoff * 2, self.config.retry_max_s)
            if ok and self.generation != generation:
                fresh = False
                continue  # kicked while we were busy
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
                fresh = not ok  # a kick: plan from what we last wrote, unless that failed
            except TimeoutError:
                fresh = True  # the periodic resync reads the kernel: repairs hand-made changes

    async def _attempt(self, generation: int, fresh: bool = True) -> bool:
        try:
            desired = self.desired()
            result = await asyncio.to_thread(self.netfilter.sync, desired, fresh)
        except WeaveError as exc:  # a tool failed, or its output was not what we can read
            return self._failed(exc if isinstance(exc, ApplyError) else ApplyError("reading netfilter", exc.message))
        except Exception as exc:  # a bug: keep the task alive, keep retrying, say so
            log.exception("enforcing network policies crashed")
            return self._failed(ApplyError("compiling", f"{type(exc).__name__}: {exc}"))
        if result.changed:
            log.info("netfilter updated in %.3f s (read+plan %.3f s)", result.apply_s, result.read_s)
        self.synced, self.last_sync_unix, self.last_state = True, time.time(), desired
        async with self._done:
            self.applied = max(self.applied, generation)
            self._done.notify_all()
        return True


    def _failed(self, exc: ApplyError) -> bool:
        self.errors += 1
        self.synced = False
        log.error("enforcing network policies failed (will retry): %s", exc.message)
        self.on_error(exc)
        return False


def state_counts(state: NPCState | None) -> Mapping[str, int]:
    """Rule, chain, set and member counts of a desired state, for status."""
    if state is None:
        return {"rules": 0, "chains": 0, "ipsets": 0, "ipset_members": 0}
    return {"rules": sum(len(r) for r in state.chains.values()) + sum(len(r) for r in state.hooks.values()),
            "chains": len(state.chains), "ipsets": len(state.ipsets),
            "ipset_members": sum(len(s.members) for s in state.ipsets.values())}
