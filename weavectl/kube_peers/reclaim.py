"""Reclaiming the address space of peers whose node is gone, one node at a time, as
Weave's kube-utils does (addMyselfToPeerList, reclaimRemovedPeers, reclaimPeer,
LoopUpdate), written as a sans-I/O state machine: `start()` gives the first Action; the
shell performs it and hands the outcome back to `handle(event, now)`, which gives the
next one, until `Done`. The only clock is `now`, passed in; the only randomness, the
jitter of a retry, comes from the rng given at construction.

The rules (Weave's step numbers in brackets):
- [register] our (peer, node) joins the peer list; a 409 Conflict (someone updated the
  ConfigMap since we read it) -> wait a jittered retry period, read, try again.
- [1] read the ConfigMap, then list the Nodes, in that order: a peer in the list was
  added by a pod on a Node that existed before, so a list taken after the read shows
  that Node unless it was deleted.
- [2] candidates: peers of the list no Node claims, or claiming our node but not us;
  none -> Done.
- [3-5] per candidate X, from a fresh read: a claim on X by us is ours (we restarted
  mid-way); a claim by a peer no longer in the list is dead and taken over; a claim by
  a live peer is theirs (skip X); no claim -> write ours with the resourceVersion just
  read. Any failure of that write (409: another node wrote first) -> skip X.
- [6] with our claim, and X still in the list: rmpeer X (a failure ends the pass).
- [7] release: one update of a fresh read dropping the claims X made, X from the list
  and the claim on X; 409 -> wait a jittered period, read, again.
- [9] when every candidate is done: start over at [1]; stop after three rounds in a
  row that changed nothing (Weave's loopsWhenNothingChanged).
Two differences from Weave: it releases with three updates (7aa, 7a, 7b), one update
here does the same at once; and our own claims on peers no longer listed (left by a
restart between [5] and [7]) are candidates too, so they are dropped on our next pass
(Weave leaves them).
"""
from __future__ import annotations

import enum
import random
from collections.abc import Mapping
from dataclasses import dataclass, field

from shared.errors import RemoteProtocolError

from . import peer_list as pl

QUIET_ROUNDS = 3          # Weave: loopsWhenNothingChanged < 3
RETRY_PERIOD_S = 2.0      # Weave's LoopUpdate: wait.JitterUntil(retryPeriod=2s, jitterFactor=1.0)


# ---- actions (for the shell) and events (from it) -------------------------------------------

@dataclass(frozen=True)
class ReadConfigMap:
    """GET kube-system/weave-net (created empty if missing) -> ConfigMapRead."""


@dataclass(frozen=True)
class ListNodes:
    """List every Node -> NodesListed."""


@dataclass(frozen=True)
class WriteConfigMap:
    """PUT the ConfigMap as last read with these annotations and this resourceVersion
    -> ConfigMapRead (what the server stored) | Conflict | Failed."""
    annotations: Mapping[str, str]
    resource_version: str


@dataclass(frozen=True)
class Rmpeer:
    """Take over the peer's ranges (ipam rmpeer) -> RmpeerDone | Failed."""
    peer_name: str


@dataclass(frozen=True)
class Wait:
    """Nothing to do until `until` -> Tick."""
    until: float


@dataclass(frozen=True)
class Done:
    reclaimed: tuple[str, ...]   # peers we rmpeer'd in this pass
    skipped: tuple[str, ...]     # candidates someone else reclaims
    error: str = ""              # why the pass stopped early ('' = it finished)


Action = ReadConfigMap | ListNodes | WriteConfigMap | Rmpeer | Wait | Done


@dataclass(frozen=True)
class ConfigMapRead:
    annotations: Mapping[str, str]
    resource_version: str


@dataclass(frozen=True)
class NodesListed:
    names: frozenset[str]  # every Node, with or without an address


@dataclass(frozen=True)
class Conflict:
    """409: the resourceVersion we wrote with is no longer the stored one."""


@dataclass(frozen=True)
class Failed:
    reason: str


@dataclass(frozen=True)
class RmpeerDone:
    taken_over: int


@dataclass(frozen=True)
class Tick:
    pass


Event = ConfigMapRead | NodesListed | Conflict | Failed | RmpeerDone | Tick


class ReclaimState(enum.Enum):
    REGISTER_READ = "reading the peer list to join it"
    REGISTER_WRITE = "adding ourselves to the peer list"
    REGISTER_WAIT = "waiting to retry joining the peer list"
    SCAN_READ = "reading the peer list"
    SCAN_LIST = "listing the nodes"
    CLAIM_READ = "reading the claims"
    CLAIM_WRITE = "claiming a peer"
    RMPEER = "removing a peer"
    RELEASE_READ = "reading the peer list to release a peer"
    RELEASE_WRITE = "releasing a peer"
    RELEASE_WAIT = "waiting to retry releasing a peer"
    DONE = "done"


@dataclass
class Reclaim:
    """One pass of Weave's reclaim by peer `me` running on node `my_node`."""
    me: str
    my_node: str
    rng: random.Random
    register: bool = True                 # join the peer list first (Weave's --reclaim at start)
    retry_period_s: float = RETRY_PERIOD_S
    state: ReclaimState = ReclaimState.SCAN_READ
    annotations: Mapping[str, str] = field(default_factory=dict)
    version: str = ""
    candidates: list[str] = field(default_factory=list)
    current: str = ""
    changed: bool = False                 # this round rmpeer'd or released someone
    quiet: int = 0                        # rounds in a row that changed nothing
    reclaimed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def start(self) -> Action:
        self.state = ReclaimState.REGISTER_READ if self.register else ReclaimState.SCAN_READ
        return ReadConfigMap()

    def handle(self, event: Event, now: float) -> Action:
        rule = RULES.get((self.state, type(event)))
        if rule is None:
            return self._done(f"unexpected {type(event).__name__} while {self.state.value}")
        if isinstance(event, ConfigMapRead):
            self.annotations, self.version = dict(event.annotations), event.resource_version
        try:
            return rule(self, event, now)
        except RemoteProtocolError as exc:  # a peer list that is not Weave's JSON
            return self._done(exc.message)

    # -- register --------------------------------------------------------------------------
    def _register_read(self, _: ConfigMapRead, now: float) -> Action:
        updated = pl.with_peer(self.annotations, self.me, self.my_node)
        if updated is None:
            return self._scan_nodes()
        self.state = ReclaimState.REGISTER_WRITE
        return WriteConfigMap(updated, self.version)

    def _register_written(self, _: ConfigMapRead, now: float) -> Action:
        return self._scan_nodes()

    def _register_conflict(self, _: Conflict, now: float) -> Action:
        self.state = ReclaimState.REGISTER_WAIT
        return self._wait(now)

    def _register_retry(self, _: Tick, now: float) -> Action:
        self.state = ReclaimState.REGISTER_READ
        return ReadConfigMap()

    # -- scan ------------------------------------------------------------------------------
    def _scan_nodes(self) -> Action:
        self.state = ReclaimState.SCAN_LIST
        return ListNodes()

    def _scan_read(self, _: ConfigMapRead, now: float) -> Action:
        return self._scan_nodes()

    def _scan_listed(self, event: NodesListed, now: float) -> Action:
        found = [p.peer_name for p in pl.reclaimable(self.annotations, event.names, self.me, self.my_node)]
        found += pl.own_stale_claims(self.annotations, self.me)
        if not found:
            return self._done()
        self.candidates, self.changed = found, False
        return self._next_candidate()

    def _next_candidate(self) -> Action:
        if not self.candidates:
            self.quiet = 0 if self.changed else self.quiet
            self.quiet += 1
            if self.quiet >= QUIET_ROUNDS:
                return self._done()
            self.state = ReclaimState.SCAN_READ
            return ReadConfigMap()
        self.current = self.candidates.pop(0)
        self.state = ReclaimState.CLAIM_READ
        return ReadConfigMap()

    # -- claim, rmpeer, release ------------------------------------------------------------
    def _claim_read(self, _: ConfigMapRead, now: float) -> Action:
        holder = pl.claimant(self.annotations, self.current)
        if holder == self.me:
            return self._check()
        if holder is not None and pl.contains(self.annotations, holder):
            self.skipped.append(self.current)
            return self._next_candidate()
        self.state = ReclaimState.CLAIM_WRITE
        return WriteConfigMap(pl.with_claim(self.annotations, self.current, self.me), self.version)

    def _claim_written(self, _: ConfigMapRead, now: float) -> Action:
        return self._check()

    def _claim_lost(self, _: Conflict | Failed, now: float) -> Action:
        self.skipped.append(self.current)
        return self._next_candidate()

    def _check(self) -> Action:
        """[6] rmpeer only if the peer is still listed (else someone finished it)."""
        if pl.contains(self.annotations, self.current):
            self.state = ReclaimState.RMPEER
            return Rmpeer(self.current)
        return self._release()

    def _rmpeer_done(self, _: RmpeerDone, now: float) -> Action:
        self.reclaimed.append(self.current)
        return self._release()

    def _rmpeer_failed(self, event: Failed, now: float) -> Action:
        return self._done(f"rmpeer {self.current}: {event.reason}")

    def _release(self) -> Action:
        self.changed = True
        self.state = ReclaimState.RELEASE_READ
        return ReadConfigMap()

    def _release_read(self, _: ConfigMapRead, now: float) -> Action:
        updated = pl.released(self.annotations, self.current)
        if updated == self.annotations:
            return self._next_candidate()
        self.state = ReclaimState.RELEASE_WRITE
        return WriteConfigMap(updated, self.version)

    def _release_written(self, _: ConfigMapRead, now: float) -> Action:
        return self._next_candidate()

    def _release_conflict(self, _: Conflict, now: float) -> Action:
        self.state = ReclaimState.RELEASE_WAIT
        return self._wait(now)

    def _release_retry(self, _: Tick, now: float) -> Action:
        self.state = ReclaimState.RELEASE_READ
        return ReadConfigMap()

    def _failed(self, event: Failed, now: float) -> Action:
        return self._done(f"{self.state.value}: {event.reason}")

    # -- helpers ---------------------------------------------------------------------------
    def _wait(self, now: float) -> Wait:
        """wait.JitterUntil(period, jitterFactor=1.0): period + up to one more period."""
        return Wait(now + self.retry_period_s * (1.0 + self.rng.random()))

    def _done(self, error: str = "") -> Done:
        self.state = ReclaimState.DONE
        return Done(tuple(self.reclaimed), tuple(self.skipped), error)


RULES = {
    (ReclaimState.REGISTER_READ, ConfigMapRead): Reclaim._register_read,
    (ReclaimState.REGISTER_READ, Failed): Reclaim._failed,
    (ReclaimState.REGISTER_WRITE, ConfigMapRead): Reclaim._register_written,
    (ReclaimState.REGISTER_WRITE, Conflict): Reclaim._register_conflict,
    (ReclaimState.REGISTER_WRITE, Failed): Reclaim._failed,
    (ReclaimState.REGISTER_WAIT, Tick): Reclaim._register_retry,
    (ReclaimState.SCAN_READ, ConfigMapRead): Reclaim._scan_read,
    (ReclaimState.SCAN_READ, Failed): Reclaim._failed,
    (ReclaimState.SCAN_LIST, NodesListed): Reclaim._scan_listed,
    (ReclaimState.SCAN_LIST, Failed): Reclaim._failed,
    (ReclaimState.CLAIM_READ, ConfigMapRead): Reclaim._claim_read,
    (ReclaimState.CLAIM_READ, Failed): Reclaim._failed,
    (ReclaimState.CLAIM_WRITE, ConfigMapRead): Reclaim._claim_written,
    (ReclaimState.CLAIM_WRITE, Conflict): Reclaim._claim_lost,
    (ReclaimState.CLAIM_WRITE, Failed): Reclaim._claim_lost,
    (ReclaimState.RMPEER, RmpeerDone): Reclaim._rmpeer_done,
    (ReclaimState.RMPEER, Failed): Reclaim._rmpeer_failed,
    (ReclaimState.RELEASE_READ, ConfigMapRead): Reclaim._release_read,
    (ReclaimState.RELEASE_READ, Failed): Reclaim._failed,
    (ReclaimState.RELEASE_WRITE, ConfigMapRead): Reclaim._release_written,
    (ReclaimState.RELEASE_WRITE, Conflict): Reclaim._release_conflict,
    (ReclaimState.RELEASE_WRITE, Failed): Reclaim._failed,
    (ReclaimState.RELEASE_WAIT, Tick): Reclaim._release_retry,
}
"""(state, event) -> rule. A pair not here is a shell bug: the pass ends with an error."""
