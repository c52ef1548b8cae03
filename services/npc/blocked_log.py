"""The recent blocked connection attempts, for `weave.npc.blocked` (Scope's probe shows
them). A bounded ring, oldest dropped first; one entry per attempt (protocol and the
four-tuple), so a retransmitted SYN updates its attempt instead of adding another."""
from __future__ import annotations

from collections import OrderedDict

from shared.schemas.npc import BlockedFlow

from .nflog import Blocked

CAPACITY = 256


class BlockedLog:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self.capacity = capacity
        self.total = 0
        self._flows: OrderedDict[tuple, BlockedFlow] = OrderedDict()

    def add(self, b: Blocked, now_unix: float) -> None:
        key = (b.protocol, b.src, b.sport, b.dst, b.dport)
        old = self._flows.pop(key, None)
        if old is None:
            self.total += 1
        count = 1 if old is None else old.count + 1
        self._flows[key] = BlockedFlow(protocol=b.protocol, src=b.src, sport=b.sport, dst=b.dst, dport=b.dport,
                                       at_unix=now_unix, count=count)
        while len(self._flows) > self.capacity:
            self._flows.popitem(last=False)

    def since(self, since_unix: float) -> tuple[BlockedFlow, ...]:
        """Attempts last logged at or after `since_unix`, oldest first."""
        return tuple(f for f in self._flows.values() if f.at_unix >= since_unix)
