"""The ipam service shell in one process, over the in-memory bus: Weave's HTTP routes and
texts, the bus API and its error codes, a waiting allocation that neither blocks other
requests nor outlives its caller, persistence across restarts (and its discard for
another peer name), and the sqlite store itself."""
from __future__ import annotations

import asyncio
import json

import pytest
from prometheus_client import generate_latest

from services.ipam.service import IpamApp
from services.ipam.store import DB_FILE
from services.ipam.store import Store
from shared import subjects
from shared.bus import BusError, MemoryBroker, MemoryBus
from shared.clock import RealClock
from shared.config import LaunchConfig, for_service
from shared.http import HttpRouter
from shared.metrics import new_registry
from shared.schemas.base import Ok
from shared.schemas.datapath import ContainerEvent, ContainersReply, ContainersRequest
from shared.schemas.http import HttpReply, HttpRequest
from shared.schemas.ipam import (AllocateReply, AllocateRequest, ClaimRequest, LookupReply, LookupRequest,
                                 ReleaseRequest, RmpeerRequest, StatusReply, StatusRequest)

H1 = "aa:00:00:00:00:01"


async def start_app(state_dir, name=H1, init=f"seed={H1}", broker=None):
    launch = LaunchConfig(state_dir=state_dir, name=name, nickname="h1", ipalloc_init=init, profile="test")
    bus = MemoryBus(broker or MemoryBroker(), "ipam")
    registry = new_registry()
    from shared.service import ServiceContext
    ctx = ServiceContext("ipam", for_service("ipam", launch), bus, registry, RealClock(), HttpRouter())
    app = IpamApp()
    await app.start(ctx)
    return app, bus


@pytest.fixture
async def seeded(tmp_path):
    app, bus = await start_app(tmp_path)
    yield app, bus
    await app.stop()


async def http(bus, method, path, query=None) -> tuple[int, str]:
    msg = HttpRequest(method=method, path=path, query=query or {})
    reply = await bus.request(subjects.request("ipam", "http"), msg, HttpReply, timeout=5)
    return reply.status, reply.body.decode()


async def eventually(probe, timeout=5.0):
    """The first truthy result of `probe()` (sync or async), polled until `timeout`."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = probe()
        result = await result if asyncio.iscoroutine(result) else result
        if result or asyncio.get_running_loop().time() > deadline:
            return result
        await asyncio.sleep(0.02)


async def ask(bus, verb, msg, reply_type, timeout=5.0):
    return await bus.request(subjects.request("ipam", verb), msg, reply_type, timeout=timeout)


async def test_weave_http_routes_and_texts(seeded):
    app, bus = seeded
    assert await http(bus, "POST", "/ip/c1") == (200, "10.32.0.1/12")
    assert await http(bus, "POST", "/ip/c1") == (200, "10.32.0.1/12"), "the same address again"
    assert await http(bus, "POST", "/ip/c2/10.40.0.0/24") == (200, "10.40.0.1/24")
    assert await http(bus, "PUT", "/ip/c3/10.32.0.9/12") == (204, "")
    assert await http(bus, "GET", "/ip/c2/10.40.0.0/24") == (200, "10.40.0.1/24")
    assert await http(bus, "GET", "/ip/c3") == (200, "10.32.0.9/12")
    assert json.loads((await http(bus, "GET", "/ip"))[1]) == {"owned": [
        {"containerid": "c1", "addrs": ["10.32.0.1/12"]}, {"containerid": "c2", "addrs": ["10.40.0.1/24"]},
        {"containerid": "c3", "addrs": ["10.32.0.9/12"]}]}
    assert await http(bus, "DELETE", "/ip/c3/10.32.0.9") == (204, "")
    assert await http(bus, "DELETE", "/ip/c2") == (204, "")
    assert await http(bus, "GET", "/ring") == (200, "")
    assert await http(bus, "GET", "/ipinfo/defaultsubnet") == (200, "10.32.0.0/12")
    assert await http(bus, "GET", "/status") == (200, "        Service: ipam\n         Status: ready\n"
                                                      "          Range: 10.32.0.0/12\n  DefaultSubnet: 10.32.0.0/12\n")
    assert await http(bus, "GET", "/status/ipam") == (
        200, "aa:00:00:00:00:01(h1)                  1048576 IPs (100.0% of total) (1 active)\n")
    report = json.loads((await http(bus, "GET", "/report"))[1])["IPAM"]
    assert report["ActiveIPs"] == 1 and report["Entries"][0]["Nickname"] == "h1" and report["Paxos"] is None
    metrics = generate_latest(app.ctx.registry).decode()
    for line in ('weave_ips{state="local-used"} 1.0', "weave_max_ips 1.048576e+06", "weave_ipam_unreachable_count 0.0",
                 "weave_ipam_unreachable_percentage 0.0", "weave_ipam_pending_allocates 0.0",
                 "weave_ipam_pending_claims 0.0"):
        assert line in metrics.splitlines(), line


async def test_bad_requests_are_refused_with_reasons_and_change_nothing(seeded):
    app, bus = seeded
    await http(bus, "POST", "/ip/c1")
    before = app.alloc.snapshot()
    cases = [
        (("POST", "/ip/x/192.168.1.0/24"), 400, "range 192.168.1.0/24 out of bounds: 10.32.0.0/12\n"),
        (("POST", "/ip/x/10.32.0.0/40"), 400, "invalid CIDR address: '10.32.0.0/40'\n"),
        (("POST", "/ip/x/10.32.0.0/31"), 400, "invalid subnet - smaller than minimum size 4: 10.32.0.0/31\n"),
        (("PUT", "/ip/x/10.32.0.1/12"), 400, "Unable to claim: address 10.32.0.1/12 is already owned by c1\n"),
        (("DELETE", "/ip/x"), 400, "Delete: no addresses for x\n"),
        (("DELETE", "/ip/c1/10.32.0.2"), 400, "Unable to free: Free: address 10.32.0.2 not found for c1\n"),
        (("GET", "/ip/x"), 404, "lookup: no address found for x in 10.32.0.0/12\n"),
        (("DELETE", "/peer/h9"), 404, "unknown peer 'h9'\n"),
        (("DELETE", "/peer/aa:00:00:00:00:01"), 400, "cannot take over ranges from ourself\n"),
        (("PATCH", "/ip/x"), 405, "method PATCH not allowed on /ip/x\n"),
    ]
    for (method, path), code, body in cases:
        assert await http(bus, method, path) == (code, body), path
    with pytest.raises(BusError) as exc:
        await ask(bus, "allocate", AllocateRequest(ident="x", subnet="10.32.0.0/33"), AllocateReply)
    assert exc.value.code == "bad_request"
    with pytest.raises(BusError) as exc:
        await ask(bus, "claim", ClaimRequest(ident="x", cidr="10.32.0.1/12"), Ok)
    assert exc.value.code == "conflict" and "owned by c1" in exc.value.description
    with pytest.raises(BusError) as exc:
        await ask(bus, "release", ReleaseRequest(ident="nobody"), Ok)
    assert exc.value.code == "not_found"
    with pytest.raises(BusError) as exc:
        await ask(bus, "rmpeer", RmpeerRequest(peer="nobody"), Ok)
    assert exc.value.code == "not_found"
    with pytest.raises(BusError) as exc:
        await ask(bus, "lookup", LookupRequest(ident="c1", subnet="10.32.0.1/12"), LookupReply)
    assert exc.value.code == "bad_request" and "bits after network prefix" in exc.value.description
    with pytest.raises(BusError) as exc:
        await bus.request(subjects.request("ipam", "allocate"), StatusRequest(), AllocateReply)
    assert exc.value.code == "bad_request" and "malformed AllocateRequest" in exc.value.description
    after = app.alloc.snapshot()
    assert after["owned"] == before["owned"] and after["ring"]["entries"] == before["ring"]["entries"]


async def test_bus_api_round_trip(seeded):
    _, bus = seeded
    cidr = (await ask(bus, "allocate", AllocateRequest(ident="c1", subnet="10.33.0.0/16"), AllocateReply)).cidr
    assert cidr == "10.33.0.1/16"
    await ask(bus, "claim", ClaimRequest(ident="c1", cidr="192.168.5.5/24"), Ok)  # outside the range: recorded
    looked = await ask(bus, "lookup", LookupRequest(ident="c1"), LookupReply)
    assert looked.cidrs == ("10.33.0.1/16", "192.168.5.5/24")
    await ask(bus, "release", ReleaseRequest(ident="c1", addr="10.33.0.1"), Ok)
    status = await ask(bus, "status", StatusRequest(), StatusReply)
    assert (status.status, status.mode, status.active_ips, len(status.entries)) == ("ready", "seed", 0, 1)


async def test_after_leaving_nothing_more_is_served(seeded):
    app, bus = seeded
    assert await http(bus, "DELETE", "/peer") == (204, "")
    code, body = await http(bus, "POST", "/ip/c1")
    assert code == 503 and "this peer has left IP allocation (DELETE /peer)" in body
    assert (await ask(bus, "status", StatusRequest(), StatusReply)).left is True


async def test_containers_the_datapath_attached_are_claimed_and_detached_ones_noted_dead(tmp_path):
    broker = MemoryBroker()
    datapath = MemoryBus(broker, "datapath")
    running = ContainerEvent(kind="attached", container_id="old", cidrs=("10.32.0.7/12",))

    async def containers(_: ContainersRequest) -> ContainersReply:
        return ContainersReply(containers=(running,))

    await datapath.serve(subjects.request("datapath", "containers"), ContainersRequest, containers)
    app, bus = await start_app(tmp_path, broker=broker)
    try:
        async def lookup(ident):
            return (await ask(bus, "lookup", LookupRequest(ident=ident), LookupReply)).cidrs

        assert await eventually(lambda: lookup("old")) == ("10.32.0.7/12",), "re-claimed at start"
        event = ContainerEvent(kind="attached", container_id="new", cidrs=("10.32.0.8/12", "192.168.0.2/24"))
        await datapath.publish(subjects.event("containers"), event)
        assert await eventually(lambda: lookup("new")) == ("10.32.0.8/12", "192.168.0.2/24")
        gone = ContainerEvent(kind="detached", container_id="new", cidrs=())
        await datapath.publish(subjects.event("containers"), gone)
        assert await eventually(lambda: "new" in app.alloc.dead), "freed after the container-died timeout ..."
        await datapath.publish(subjects.event("containers"), event)
        assert await eventually(lambda: "new" not in app.alloc.dead), "... unless it comes back"
        assert await lookup("new") == ("10.32.0.8/12", "192.168.0.2/24")
    finally:
        await app.stop()
        await datapath.close()


async def test_a_waiting_allocation_blocks_nothing_and_is_dropped_when_its_caller_gives_up(tmp_path):
    app, bus = await start_app(tmp_path, init="consensus=3")  # quorum 2, and nobody else
    try:
        waiting = asyncio.create_task(ask(bus, "allocate", AllocateRequest(ident="c1", wait_s=1.0), AllocateReply))
        await asyncio.sleep(0.2)
        started = asyncio.get_running_loop().time()
        assert await http(bus, "GET", "/status") == (200, "        Service: ipam\n         Status: awaiting consensus "
                                                          "(quorum: 2, known: 1)\n          Range: 10.32.0.0/12\n"
                                                          "  DefaultSubnet: 10.32.0.0/12\n")
        assert asyncio.get_running_loop().time() - started < 0.7
        assert (await ask(bus, "status", StatusRequest(), StatusReply)).pending_allocates == 1
        with pytest.raises(BusError) as exc:
            await waiting
        assert exc.value.code == "unavailable"
        assert "allocate for c1: no answer within 1 s; IPAM status: awaiting consensus" in exc.value.description
        assert (await ask(bus, "status", StatusRequest(), StatusReply)).pending_allocates == 0
        # Stopping answers whoever is still waiting, at once.
        waiting = asyncio.create_task(ask(bus, "allocate", AllocateRequest(ident="c2", wait_s=30), AllocateReply,
                                          timeout=35))
        await asyncio.sleep(0.2)
    finally:
        await app.stop()
    with pytest.raises(BusError) as exc:
        await asyncio.wait_for(waiting, 5)
    assert exc.value.code == "unavailable" and "cancelled" in exc.value.description


async def test_allocations_survive_a_restart_but_not_a_new_peer_name(tmp_path):
    app, bus = await start_app(tmp_path)
    got = [await http(bus, "POST", f"/ip/c{i}") for i in range(5)]
    await app.stop()
    app, bus = await start_app(tmp_path)
    assert [await http(bus, "GET", f"/ip/c{i}") for i in range(5)] == got
    assert (await http(bus, "POST", "/ip/c9"))[1] == "10.32.0.6/12"
    await app.stop()
    app, bus = await start_app(tmp_path, name="aa:00:00:00:00:02", init="seed=aa:00:00:00:00:02")
    try:
        assert (await http(bus, "GET", "/ip/c0"))[0] == 404, "another peer's data is discarded"
        assert (await http(bus, "POST", "/ip/n1"))[0] == 200  # answered once saved
        store = Store(tmp_path / DB_FILE)
        stored = store.load()
        store.close()
        assert stored["peer_name"] == "aa:00:00:00:00:02" and list(stored["owned"]) == ["n1"]
    finally:
        await app.stop()


def test_store_writes_deltas_and_loads_the_whole_back(tmp_path):
    snap = {"version": 1, "peer_name": H1, "range": "10.32.0.0/12",
            "ring": {"start": 1, "end": 9, "peer": 1, "entries": [[1, 1, 3, 8]], "seeds": [1]},
            "owned": {"a": {"is_container": True, "cidrs": ["10.32.0.1/12", "10.32.0.2/12"]},
                      "weave:expose": {"is_container": False, "cidrs": ["10.32.0.3/12"]}}}
    store = Store(tmp_path / "t.db")
    assert store.load() is None
    store.save(snap)
    assert store.load() == snap
    ring = dict(snap["ring"], entries=[[1, 1, 4, 7]])
    store.save(dict(snap, ring=ring, owned={"a": {"is_container": True, "cidrs": ["10.32.0.2/12"]}, "b": None}))
    store.save(dict(snap, ring=ring, owned={"weave:expose": None, "c": {"is_container": True, "cidrs": ["1.2.3.4/8"]}}))
    store.close()
    again = Store(tmp_path / "t.db")
    assert again.load() == dict(snap, ring=ring, owned={"a": {"is_container": True, "cidrs": ["10.32.0.2/12"]},
                                                        "c": {"is_container": True, "cidrs": ["1.2.3.4/8"]}})
    again.clear()
    assert again.load() is None
    again.close()


def test_owned_changes_are_taken_once_and_can_be_put_back():
    from services.ipam.address import parse_cidr
    from services.ipam.owned import Owned
    owned = Owned()
    owned.add("a", parse_cidr("10.0.0.1/8"), True)
    owned.add("b", parse_cidr("10.0.0.2/8"), False)
    owned.remove("b", parse_cidr("10.0.0.2/8").addr)
    changes = owned.take_changes()
    assert changes == {"a": {"is_container": True, "cidrs": ["10.0.0.1/8"]}, "b": None}
    assert owned.take_changes() == {}
    owned.changed(changes)
    assert owned.take_changes() == changes
