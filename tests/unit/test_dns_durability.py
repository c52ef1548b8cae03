"""What the dns service acknowledged survives its crash (issue 19), in the in-process
cluster: a crash is injected at each step of a change (before the journal write, after
it but before the reply, after the reply); the host restarts from the files a SIGKILL
at that instant would have left, the hosts gossip, and then every host agrees and
nothing acknowledged is lost, nothing acknowledged as deleted comes back."""
from __future__ import annotations

import asyncio
import threading

import pytest
from dnslib import RCODE

from services.dns import snapshot
from shared import subjects
from shared.bus import BusError
from shared.durable import Journal
from shared.schemas.datapath import ContainerEvent
from shared.schemas.dns import AddRequest, ChangeReply, ListReply, ListRequest, RemoveRequest
from tests.unit.dns_cluster import Host, Mesh, wait_for

STEPS = ("before_write", "after_write", "after_reply")


class CrashingJournal(Journal):
    """A journal that stops the world at one step of the next append once `armed`: the
    test takes the disk as it is at that instant, then lets the thread go on (or, for
    `before_write`, fail as a dead process would)."""

    def __init__(self, path, step: str) -> None:
        super().__init__(path)
        self.step, self.armed = step, False
        self.reached, self.release = threading.Event(), threading.Event()

    def append(self, records) -> None:
        if self.armed and self.step == "before_write":
            self._stop_here()
            raise OSError("the process was killed")
        super().append(records)
        if self.armed and self.step == "after_write":
            self._stop_here()

    def _stop_here(self) -> None:
        self.armed = False
        self.reached.set()
        self.release.wait(10)


async def names(host: Host) -> dict[str, list[str]]:
    listed = await host.bus.request(subjects.request("dns", "list"), ListRequest(), ListReply)
    out: dict[str, list[str]] = {}
    for e in listed.entries:
        out.setdefault(e.hostname, []).append(e.address)
    return out


async def add(host: Host, name: str, ip: str, container: str = "weave:extern") -> ChangeReply:
    return await host.bus.request(subjects.request("dns", "add"),
                                  AddRequest(container_id=container, ip=ip, fqdn=name), ChangeReply)


async def remove(host: Host, name: str) -> ChangeReply:
    return await host.bus.request(subjects.request("dns", "remove"), RemoveRequest(fqdn=name), ChangeReply)


async def crash_during(host: Host, journal: CrashingJournal, change) -> tuple[bool, dict]:
    """Run `change` (a coroutine function) on `host`, crash at the journal's step.
    Returns (acknowledged, the disk at the crash)."""
    journal.armed = True
    task = asyncio.create_task(change())
    if journal.step == "after_reply":
        journal.armed = False
        await task
        return True, host.disk()
    assert await asyncio.to_thread(journal.reached.wait, 5), "the change never reached the journal"
    disk = host.disk()
    acked = task.done() and not task.exception()
    journal.release.set()
    try:
        await task
    except BusError:
        pass
    return acked, disk


async def settle(mesh: Mesh, hosts: list[Host]) -> list[dict]:
    """Gossip rounds until every host holds the same live names; returns them."""
    async def agreed():
        await mesh.gossip_all()
        await asyncio.sleep(0.05)
        views = [await names(h) for h in hosts]
        return views if all(v == views[0] for v in views) else None
    return await wait_for(agreed, what="hosts agreeing on names")


@pytest.fixture
async def cluster_with(tmp_path):
    """Builds a 3-host cluster whose h1 journals through a CrashingJournal at `step`."""
    made: list[Host] = []

    async def build(step: str):
        mesh = Mesh()
        hosts = [Host(i, tmp_path / step) for i in (1, 2, 3)]
        journal = CrashingJournal(hosts[0].state_dir / snapshot.JOURNAL_NAME, step)
        hosts[0].journal = journal
        for h in hosts:
            h.attached = []
            await mesh.join(h)
        for h in hosts:
            await h.start()
        made.extend(hosts)
        return mesh, hosts, journal
    yield build
    for h in made:
        if h.app is not None:
            await h.stop()


@pytest.mark.parametrize("step", STEPS)
async def test_an_add_survives_a_crash_once_acknowledged(cluster_with, step):
    mesh, hosts, journal = await cluster_with(step)
    h1 = hosts[0]
    await add(h1, "before.weave.local", "10.32.0.1")
    await wait_for(lambda: _has(hosts[1], "before.weave.local."))
    acked, disk = await crash_during(h1, journal, lambda: add(h1, "new.weave.local", "10.32.0.2"))
    await h1.crash(disk)
    h1.journal = None
    await h1.start()
    views = await settle(mesh, hosts)
    assert views[0]["before.weave.local."] == ["10.32.0.1"], "acknowledged before the crash"
    if acked or step != "before_write":
        assert views[0].get("new.weave.local.") == ["10.32.0.2"], f"acknowledged ({step}) but lost"
    else:
        assert "new.weave.local." not in views[0], "never written, never broadcast: nowhere"
    for h in hosts:
        rcode = (await h.query("before.weave.local")).header.rcode
        assert rcode == RCODE.NOERROR


@pytest.mark.parametrize("step", STEPS)
async def test_a_remove_never_comes_back_once_acknowledged(cluster_with, step):
    mesh, hosts, journal = await cluster_with(step)
    h1 = hosts[0]
    await add(h1, "doomed.weave.local", "10.32.0.3")
    await add(h1, "kept.weave.local", "10.32.0.4")
    await wait_for(lambda: _has(hosts[2], "doomed.weave.local."))
    acked, disk = await crash_during(h1, journal, lambda: remove(h1, "doomed.weave.local"))
    await h1.crash(disk)
    h1.journal = None
    await h1.start()
    views = await settle(mesh, hosts)
    assert views[0]["kept.weave.local."] == ["10.32.0.4"]
    if acked or step != "before_write":
        assert "doomed.weave.local." not in views[0], f"deleted ({step}) but resurrected"
    else:
        assert views[0]["doomed.weave.local."] == ["10.32.0.3"], "the delete never happened anywhere"


@pytest.mark.parametrize("step", STEPS)
async def test_a_detach_missed_in_a_crash_still_removes_the_names(cluster_with, step):
    mesh, hosts, journal = await cluster_with(step)
    h1 = hosts[0]
    event = ContainerEvent(kind="attached", container_id="c-web", cidrs=("10.32.0.9/12",), fqdn="web.weave.local")
    h1.attached = [event]
    await h1.gossip_bus.publish(subjects.event("containers"), event)
    await wait_for(lambda: _has(hosts[1], "web.weave.local."))
    h1.attached = []  # the datapath detached it, and says so

    async def detach():
        await h1.gossip_bus.publish(subjects.event("containers"),
                                    ContainerEvent(kind="detached", container_id="c-web", cidrs=()))
        await wait_for(lambda: _lacks(h1, "web.weave.local."))
    _, disk = await crash_during(h1, journal, detach)
    await h1.crash(disk)
    h1.journal = None
    await h1.start()
    views = await settle(mesh, hosts)
    assert "web.weave.local." not in views[0], f"a detached container's name came back ({step})"


async def test_a_new_run_still_starts_without_our_old_entries(cluster_with):
    """The incarnation rule is kept: only a crash of the dns process restores ours."""
    mesh, hosts, _ = await cluster_with("after_reply")
    h1 = hosts[0]
    await add(h1, "old.weave.local", "10.32.0.5")
    await wait_for(lambda: _has(hosts[1], "old.weave.local."))
    await h1.stop()
    h1.journal, h1.incarnation, h1.uid = None, "run-2", 2
    await h1.start()
    views = await settle(mesh, hosts)
    assert "old.weave.local." not in views[0]


async def test_the_journal_is_compacted_into_the_snapshot(tmp_path):
    mesh, host = Mesh(), Host(1, tmp_path, snapshot_delay_s=0.05)
    await mesh.join(host)
    await host.start()
    try:
        await _add_twenty(host)
    finally:
        await host.stop()


async def _add_twenty(host: Host) -> None:
    for i in range(20):
        await add(host, f"n{i}.weave.local", f"10.32.1.{i}")
    journal = host.state_dir / snapshot.JOURNAL_NAME

    async def compacted():
        snap = snapshot.loads((host.state_dir / snapshot.FILE_NAME).read_bytes())
        return len(snap.entries) == 20 and journal.read_bytes() == b""
    await wait_for(compacted, what="snapshot with every entry and an empty journal")


async def _has(host: Host, name: str) -> bool:
    return name in await names(host)


async def _lacks(host: Host, name: str) -> bool:
    return name not in await names(host)


def test_the_snapshot_is_written_in_pieces_that_make_the_whole_document(tmp_path):
    """dump_chunks yields the same JSON the whole-document encoder made, in pieces of
    ROWS_PER_CHUNK entries, and write_atomic writes such pieces as they come."""
    import json

    from services.dns.entry import DnsEntry
    from shared.durable import write_atomic
    from shared.weave.peer_name import PeerName

    peers = [PeerName.parse(f"aa:00:00:00:00:0{i}") for i in (1, 2)]
    entries = tuple(DnsEntry(f"c{i:03d}", peers[i % 2], 0x0A200000 + i, f"n{i}.weave.local.", i % 3, i % 2 * 1000)
                    for i in range(2 * snapshot.ROWS_PER_CHUNK + 5))
    for snap in (snapshot.Snapshot("inc", 12.5, entries, 7, frozenset({"b", "a"})),
                 snapshot.Snapshot("inc", 12.5, (), 0, frozenset())):
        whole = json.dumps({"format": snapshot.FORMAT, "incarnation": snap.incarnation, "saved_at": snap.saved_at,
                            "journal_seq": snap.journal_seq, "bound": sorted(snap.bound),
                            "entries": [[e.hostname, str(e.origin), e.container_id, e.addr, e.version, e.tombstone]
                                        for e in snap.entries]}, separators=(",", ":")).encode()
        pieces = list(snapshot.dump_chunks(snap))
        assert b"".join(pieces) == whole == snapshot.dumps(snap)
        assert len(pieces) == 2 + -(-len(snap.entries) // snapshot.ROWS_PER_CHUNK)
        write_atomic(tmp_path / "s.json", iter(pieces), 0o600)
        back = snapshot.loads((tmp_path / "s.json").read_bytes())
        assert back.entries == snap.entries and back.bound == snap.bound and back.journal_seq == snap.journal_seq


def test_writing_the_snapshot_holds_a_piece_not_the_whole_store_in_memory():
    import tracemalloc

    from services.dns.entry import DnsEntry
    from shared.weave.peer_name import PeerName

    peer = PeerName.parse("aa:00:00:00:00:01")
    entries = tuple(DnsEntry(f"{i:064x}", peer, 0x0A200000 + i, f"soak{i}.weave.local.", 1, 1_700_000_000)
                    for i in range(3000))
    snap = snapshot.Snapshot("inc", 1.0, entries, 1, frozenset())
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        for _ in snapshot.dump_chunks(snap):
            pass
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024, peak  # the whole document at once: ~2.5 MB for these 3,000 entries
