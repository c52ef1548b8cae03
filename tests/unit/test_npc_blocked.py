"""npc's recent blocked attempts (`weave.npc.blocked`, for Scope's probe): the bounded
ring, and the request answered by a real NpcApp on an in-memory bus and kernel."""
from __future__ import annotations

from services.npc.blocked_log import BlockedLog
from services.npc.memory_netfilter import MemoryKernel
from services.npc.nflog import Blocked
from services.npc.service import NpcApp
from shared import subjects
from shared.bus import MemoryBroker, MemoryBus
from shared.clock import ManualClock
from shared.config import LaunchConfig, NpcSettings, for_service
from shared.http import HttpRouter
from shared.metrics import new_registry
from shared.schemas.npc import BlockedReply, BlockedRequest
from shared.service import ServiceContext

SYN = Blocked("tcp", "10.32.0.2", 40000, "10.40.0.1", 80)


def test_one_entry_per_attempt_retransmits_counted_oldest_dropped():
    log = BlockedLog(capacity=3)
    log.add(SYN, 100.0)
    log.add(SYN, 101.0)  # the SYN retransmitted: the same attempt
    assert [(f.sport, f.count, f.at_unix) for f in log.since(0)] == [(40000, 2, 101.0)]
    for i in range(1, 4):
        log.add(Blocked("udp", "10.32.0.2", 50000 + i, "10.40.0.1", 53), 101.0 + i)
    flows = log.since(0)
    assert [f.sport for f in flows] == [50001, 50002, 50003], "the oldest went when the ring was full"
    assert [f.protocol for f in flows] == ["udp"] * 3
    assert log.total == 4
    assert [f.sport for f in log.since(103.0)] == [50002, 50003]


def test_a_retried_attempt_moves_to_the_newest_end():
    log = BlockedLog(capacity=2)
    log.add(SYN, 1.0)
    log.add(Blocked("tcp", "10.32.0.3", 40001, "10.40.0.1", 80), 2.0)
    log.add(SYN, 3.0)
    log.add(Blocked("tcp", "10.32.0.4", 40002, "10.40.0.1", 80), 4.0)
    assert [f.src for f in log.since(0)] == ["10.32.0.2", "10.32.0.4"]


async def test_npc_answers_weave_npc_blocked(tmp_path):
    clock = ManualClock(1_700_000_000.0)
    broker = MemoryBroker()
    bus, client = MemoryBus(broker, "npc"), MemoryBus(broker, "scope-probe")
    launch = LaunchConfig(state_dir=tmp_path, name="aa:00:00:00:00:01", nickname="h1")
    ctx = ServiceContext("npc", for_service("npc", launch), bus, new_registry(), clock, HttpRouter())
    app = NpcApp(NpcSettings(resync_s=0.2, gossip_interval_s=0.3, persist_delay_s=0.01),
                 runner=MemoryKernel().run)
    await app.start(ctx)
    try:
        app._on_blocked(SYN)  # what the NFLOG reader does with a dropped SYN
        clock.advance(10)
        app._on_blocked(Blocked("udp", "10.32.0.2", 5353, "10.40.0.1", 53))
        reply = await client.request(subjects.request("npc", "blocked"), BlockedRequest(), BlockedReply)
        assert [(f.protocol, f.dst, f.dport, f.at_unix) for f in reply.flows] == [
            ("tcp", "10.40.0.1", 80, 1_700_000_000.0), ("udp", "10.40.0.1", 53, 1_700_000_010.0)]
        assert (reply.total, reply.capacity) == (2, 256)
        recent = await client.request(subjects.request("npc", "blocked"),
                                      BlockedRequest(since_unix=1_700_000_005.0), BlockedReply)
        assert [f.protocol for f in recent.flows] == ["udp"]
        assert app.blocked_total == 2
    finally:
        await app.stop()
        await bus.close()
        await client.close()
