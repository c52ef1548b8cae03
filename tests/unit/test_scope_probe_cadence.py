"""The probe core's cadence on a manual clock: spy every second, publish every third, a
full report every third publish and deltas between (Scope's un-merge, less unchanged
latest values), back to full after a failed publish."""
from __future__ import annotations

from services.scope.probe import procfs
from services.scope.probe.host import HostFacts
from services.scope.probe.probe import Probe, Schedule, SpyInputs, scope_delta
from services.scope.probe.walker import ProcessSample
from shared.clock import ManualClock

S = 1_000_000_000
FACTS = HostFacts(kernel="6.1.0 #1", uptime_s=100, load1=0.5, cpu=procfs.CpuTimes(1000, 800, 2), mem_used=1 << 30,
                  mem_total=8 << 30, local_networks=("127.0.0.1/8",))


def proc(pid: int, jiffies: int = 0, ppid: int = 1) -> ProcessSample:
    return ProcessSample(pid, ppid, "/bin/sleep", "/bin/sleep 60 ", 1, jiffies, 4096, 2**64 - 1, 3, 1024, 1, 7)


def inputs(t: int, procs: list[ProcessSample]) -> SpyInputs:
    cpu = procfs.CpuTimes(1000 + 200 * t, 800 + 150 * t, 2)
    return SpyInputs(host=HostFacts(**{**FACTS.__dict__, "cpu": cpu, "uptime_s": 100 + t}), processes=procs)


def test_schedule_spies_every_second_and_publishes_every_third():
    clock = ManualClock()
    sched = Schedule(1.0, 3.0, clock.monotonic())
    seen = []
    for _ in range(10):
        seen.append(sched.due(clock.monotonic()))
        assert sched.next_deadline() == clock.monotonic() + 1.0
        clock.advance(1.0)
    assert seen == [(True, False), (True, False), (True, False), (True, True), (True, False), (True, False),
                    (True, True), (True, False), (True, False), (True, True)]


def test_schedule_drops_missed_ticks_like_a_go_ticker():
    sched = Schedule(1.0, 3.0, 0.0)
    sched.due(0.0)
    assert sched.due(7.5) == (True, True)  # a stall of 7.5 s: one spy and one publish, not seven
    assert (sched.next_spy, sched.next_publish) == (8.5, 10.5)
    assert sched.due(8.0) == (False, False)


def run(probe: Probe, seconds: int, failing: set[int] = frozenset(), procs=lambda t: [proc(10, t)]):
    """Drive the probe as the shell does; returns [(publish time, full, report)]."""
    clock = ManualClock(1_700_000_000.0)
    sched = Schedule(1.0, 3.0, clock.monotonic())
    out = []
    for t in range(seconds + 1):
        spy, publish = sched.due(clock.monotonic())
        now = int(clock.now() * S)
        if spy:
            probe.spy(inputs(t, procs(t)), now)
        if publish:
            pub = probe.publish(now)
            probe.published(pub, t not in failing)
            out.append((t, pub.full, pub.report))
        clock.advance(1.0)
    return out


def test_full_every_third_publish_deltas_between():
    pubs = run(Probe("h1", "p1", "v", full_every=3), 21)
    assert [(t, full) for t, full, _ in pubs] == [(3, True), (6, False), (9, False), (12, True), (15, False),
                                                  (18, False), (21, True)]
    first = pubs[0][2]
    assert len(first.process.nodes["h1;10"].metrics["open_files_count"].samples) == 4, "spies at 0, 1, 2, 3"
    delta = pubs[1][2]
    node = delta.process.nodes["h1;10"]
    assert node.latest == {} and node.id == "" and node.parents == {}, "nothing of it changed but its samples"
    assert len(node.metrics["open_files_count"].samples) == 3 and "process_cpu_usage_percent" in node.metrics
    assert delta.process.metadata_templates == {}, "templates are in the full report"
    assert [r.window for _, _, r in pubs] == [0] + [3 * S] * 6
    assert len({r.id for _, _, r in pubs}) == 7 and all(r.id.isdigit() for _, _, r in pubs)


def test_a_delta_carries_what_changed():
    def procs(t):  # pid 20 appears at t=5; pid 10's parent changes at t=8
        return [proc(10, t, ppid=1 if t < 8 else 2)] + ([proc(20, t)] if t >= 5 else [])
    pubs = run(Probe("h1", "p1", "v"), 9, procs=procs)
    (_, _, full), (_, _, d6), (_, _, d9) = pubs
    assert set(d6.process.nodes) == {"h1;10", "h1;20"}
    assert d6.process.nodes["h1;20"].id == "h1;20", "a new node goes whole"
    assert d6.process.nodes["h1;20"].lookup("pid") == "20"
    assert d9.process.nodes["h1;10"].lookup("ppid") == "2", "latest values that changed are sent"
    merged = full.merge(d9)
    assert merged.process.nodes["h1;10"].lookup("ppid") == "2"
    host = d9.host.nodes["h1;<host>"]
    assert host.lookup("uptime") == "109", "the host's uptime and ts change every spy"


def test_a_failed_publish_makes_the_next_one_full():
    pubs = run(Probe("h1", "p1", "v"), 15, failing={6})
    assert [(t, full) for t, full, _ in pubs] == [(3, True), (6, False), (9, True), (12, False), (15, False)]


def test_scope_delta_against_a_report_without_the_node():
    probe = Probe("h1", "p1", "v")
    a = probe.spy(inputs(0, [proc(10)]), 1 * S)
    b = probe.spy(inputs(1, [proc(10), proc(11)]), 2 * S)
    delta = scope_delta(b, a)
    assert delta.process.nodes["h1;11"] == b.process.nodes["h1;11"]
    assert a.merge(delta).process.nodes.keys() == b.process.nodes.keys()
