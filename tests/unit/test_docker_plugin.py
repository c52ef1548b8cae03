"""The Docker plugin's request handling, in the JSON shapes Docker's libnetwork sends
(drivers/remote/api, ipams/remote/api) and Weave 2.8's plugin answers; its drivers'
decisions; the watcher's decisions; and the service shell answering over a real unix
socket with the stack played by an in-memory bus."""
from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest
from prometheus_client import CollectorRegistry

from services.docker_plugin import ipam, remote_api as api, watcher
from services.docker_plugin.driver import Network, NetworkDriver, Refused
from shared import subjects
from shared.bus import MemoryBroker, MemoryBus
from shared.clock import RealClock
from shared.config import LaunchConfig, for_service
from shared.docker import DockerContainer
from shared.http import HttpRouter
from shared.schemas import Ok
from shared.schemas.datapath import EndpointReply, EndpointRequest
from shared.schemas.ipam import (AllocateReply, AllocateRequest, ClaimRequest, ReleaseRequest, StatusReply,
                                 StatusRequest)
from shared.service import ServiceContext

NET = "4c6f0a9ad1a4e52a3b0ab2e6f6e4a1c2b7b0f0e9d3a1c2b3d4e5f60718293a4b"
EP = "9f1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccddeeff0"


def body(obj) -> bytes:
    return json.dumps(obj).encode()


# -- remote_api: what Docker sends ---------------------------------------------------------
def test_parse_reads_libnetworks_shapes():
    create = api.parse("/NetworkDriver.CreateNetwork", body({
        "NetworkID": NET, "Options": {"com.docker.network.enable_ipv6": False,
                                      "com.docker.network.generic": {"works.weave.multicast": "", "n": 3}},
        "IPv4Data": [{"AddressSpace": "weavelocal", "Pool": "10.32.0.0/12", "Gateway": "10.32.0.0/12",
                      "AuxAddresses": None}], "IPv6Data": []}))
    assert create == api.CreateNetwork(NET, {"works.weave.multicast": ""}, ("10.32.0.0/12",))
    ep = api.parse("/NetworkDriver.CreateEndpoint", body({
        "NetworkID": NET, "EndpointID": EP, "Options": {"com.docker.network.endpoint.exposedports": []},
        "Interface": {"Address": "10.32.0.1/12", "AddressIPv6": "", "MacAddress": ""}}))
    assert ep == api.CreateEndpoint(NET, EP, "10.32.0.1/12", "", True)
    assert api.parse("/NetworkDriver.Join", body({"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/x/netns/1",
                                                  "Options": {}})) == api.Join(NET, EP, "/x/netns/1")
    assert api.parse("/IpamDriver.RequestPool", body({"AddressSpace": "weavelocal", "Pool": "", "SubPool": "",
                                                      "Options": {}, "V6": False})) == \
        api.RequestPool("weavelocal", "", "", {}, False)
    assert api.parse("/IpamDriver.RequestAddress", body({"PoolID": "weave-10.32.0.0/12-10.32.0.0/12",
                                                         "Address": "", "Options": None})) == \
        api.RequestAddress("weave-10.32.0.0/12-10.32.0.0/12", "", {})
    assert api.parse("/IpamDriver.ReleaseAddress", body({"PoolID": "p", "Address": "10.32.0.1"})) == \
        api.ReleaseAddress("p", "10.32.0.1")
    assert api.parse("/Plugin.Activate", b"") == api.Activate()
    assert api.parse("/NetworkDriver.DiscoverNew", body({"DiscoveryType": 1, "DiscoveryData": {}})) == \
        api.Simple("NetworkDriver", "DiscoverNew", {"DiscoveryType": 1, "DiscoveryData": {}})


@pytest.mark.parametrize("path, raw, why", [
    ("/NetworkDriver.Explode", b"{}", "unknown method"),
    ("/VolumeDriver.Mount", b"{}", "unknown method"),
    ("/NetworkDriver.Join", b"[1, 2]", "not an object"),
    ("/NetworkDriver.Join", b"{nope", "decode JSON"),
    ("/NetworkDriver.Join", body({"NetworkID": NET}), "EndpointID missing"),
    ("/NetworkDriver.CreateEndpoint", body({"NetworkID": NET, "EndpointID": EP, "Interface": "x"}), "object"),
    ("/IpamDriver.ReleaseAddress", body({"PoolID": "p", "Address": 7}), "must be a string"),
])
def test_parse_refuses_what_it_cannot_read(path, raw, why):
    with pytest.raises(api.BadRequest, match=why):
        api.parse(path, raw)


def test_answers_are_json_objects_and_refusals_carry_err():
    assert json.loads(api.encode(api.error("no"))) == {"Err": "no"}
    assert json.loads(api.encode({})) == {}


# -- the network driver ----------------------------------------------------------------------
def test_network_driver_answers_as_weaves():
    d = NetworkDriver()
    assert d.activate() == {"Implements": ["NetworkDriver", "IpamDriver"]}
    assert d.capabilities()["Scope"] == "local"
    assert d.create_network(api.CreateNetwork(NET, {}, ())) == {}
    join = d.join(api.Join(NET, EP, "/sb"), "vethwg9f1e2d3c4")
    assert join == {"InterfaceName": {"SrcName": "vethwg9f1e2d3c4", "DstPrefix": "ethwe"}}
    d.create_network(api.CreateNetwork("m", {"works.weave.multicast": ""}, ()))
    assert d.join(api.Join("m", EP, ""), "g")["StaticRoutes"] == [{"Destination": "224.0.0.0/4", "RouteType": 1}]
    d.delete_network(api.DeleteNetwork(NET))
    with pytest.raises(LookupError):
        d.join(api.Join(NET, EP, ""), "g")


@pytest.mark.parametrize("value, on", [("", True), ("true", True), ("1", True), ("false", False), ("F", False)])
def test_multicast_option(value, on):
    assert NetworkDriver().learn("n", "weave", {"works.weave.multicast": value}) == Network(True, on)


def test_bad_option_value_and_foreign_networks():
    with pytest.raises(Refused, match="unrecognized value"):
        NetworkDriver().create_network(api.CreateNetwork(NET, {"works.weave.multicast": "maybe"}, ()))
    assert NetworkDriver().learn("n", "bridge", {}) == Network(False)
    assert NetworkDriver().learn("n", "weavemesh", {"other": "x"}) == Network(True)


def test_endpoint_needs_docker_to_pass_the_interface_and_takes_our_mac_only_without_its_own():
    d = NetworkDriver()
    with pytest.raises(Refused, match="Not supported"):
        d.check_endpoint(api.CreateEndpoint(NET, EP, "", "", False))
    plain = api.CreateEndpoint(NET, EP, "10.32.0.1/12", "", True)
    assert d.endpoint_created(plain, "7a:00:00:00:00:01") == {"Interface": {"MacAddress": "7a:00:00:00:00:01"}}
    given = api.CreateEndpoint(NET, EP, "10.32.0.1/12", "02:42:0a:20:00:01", True)
    assert d.endpoint_created(given, "7a:00:00:00:00:01") == {}


# -- the IPAM driver ---------------------------------------------------------------------------
def test_pools_are_named_so_later_calls_need_nothing_else():
    answer = ipam.pool(api.RequestPool("weavelocal", "", "", {}, False), "10.32.0.0/12")
    assert answer == {"PoolID": "weave-10.32.0.0/12-10.32.0.0/12", "Pool": "10.32.0.0/12",
                      "Data": {"com.docker.network.gateway": "10.32.0.0/12"}}
    sub = ipam.pool(api.RequestPool("weavelocal", "10.2.0.0/16", "10.2.3.0/24", {}, False), "unused")
    assert sub["PoolID"] == "weave-10.2.0.0/16-10.2.3.0/24" and sub["Pool"] == "10.2.0.0/16"
    with pytest.raises(Refused, match="not inside"):
        ipam.pool(api.RequestPool("", "10.2.0.0/16", "10.9.0.0/24", {}, False), "x")
    with pytest.raises(Refused, match="IPv6"):
        ipam.pool(api.RequestPool("", "", "", {}, True), "10.32.0.0/12")
    with pytest.raises(Refused, match="invalid pool"):
        ipam.pool(api.RequestPool("", "10.2.0.300/16", "", {}, False), "x")


def test_address_requests_become_claims_or_allocations():
    any_ = ipam.address_plan(api.RequestAddress("weave-10.2.0.0/16-10.2.3.0/24", "", {}))
    assert any_ == ipam.Plan("allocate", "10.2.3.0/24", 16)
    assert ipam.address_answer("10.2.3.7/24", any_) == {"Address": "10.2.3.7/16", "Data": {}}
    fixed = ipam.address_plan(api.RequestAddress("weave-10.2.0.0/16-10.2.0.0/16", "10.2.9.9", {}))
    assert fixed == ipam.Plan("claim", "10.2.9.9/16", 16)
    with pytest.raises(Refused, match="not in pool"):
        ipam.address_plan(api.RequestAddress("weave-10.2.0.0/16-10.2.0.0/16", "10.3.0.1", {}))
    with pytest.raises(Refused, match="Unrecognized pool ID"):
        ipam.address_plan(api.RequestAddress("default-10.2.0.0/16", "", {}))
    assert ipam.release_ident(api.ReleaseAddress("p", "10.2.9.9")) == "10.2.9.9"
    assert ipam.release_ident(api.ReleaseAddress("p", "10.2.9.9/16")) == "10.2.9.9"


# -- the watcher's decisions ---------------------------------------------------------------------
def inspected(name="web", state="running", pid=42, net_id=NET, cidr="10.32.0.5/12", hostname="abc",
              domainname="", labels=None) -> DockerContainer:
    ip, plen = cidr.split("/") if cidr else ("", 0)
    return DockerContainer.from_inspect({
        "Id": "a" * 64, "Name": f"/{name}", "Image": "sha256:1",
        "Config": {"Image": "weave-busybox", "Labels": labels or {"app": "web"}, "Hostname": hostname,
                   "Domainname": domainname, "Cmd": ["sleep", "600"]},
        "State": {"Status": state, "Pid": pid if state == "running" else 0},
        "HostConfig": {"NetworkMode": "weave"},
        "NetworkSettings": {"Networks": {"weave": {"NetworkID": net_id, "EndpointID": EP, "IPAddress": ip,
                                                   "IPPrefixLen": int(plen), "MacAddress": "7a:00:00:00:00:01"}}}})


OURS = {NET: Network(True)}


def test_a_container_starting_on_our_network_is_adopted_with_its_name_and_labels():
    c = inspected()
    assert c.netns_path == "/proc/42/ns/net" and c.short_id == "a" * 12
    assert watcher.on_start(c, OURS, "weave.local.") == [
        watcher.Adopt("a" * 64, "/proc/42/ns/net", "10.32.0.5/12", "web.weave.local", "ethwe0", False,
                      {"app": "web"})]


@pytest.mark.parametrize("c, networks", [
    (inspected(net_id="other"), OURS),                # on another network
    (inspected(), {NET: Network(False)}),             # a network of another driver
    (inspected(state="exited"), OURS),                # no longer running
    (inspected(cidr=""), OURS),                       # no address there
])
def test_containers_that_are_not_ours_to_adopt(c, networks):
    assert watcher.on_start(c, networks, "weave.local.") == []


@pytest.mark.parametrize("c, fqdn", [
    (inspected(hostname="db", domainname="weave.local"), "db.weave.local"),   # Weave's: hostname.domainname
    (inspected(name="web"), "web.weave.local"),                                # ours: the container's name
    (inspected(name="my_web"), ""),                                            # not a DNS label: no name
    (inspected(hostname="x_y", domainname="weave.local"), ""),
])
def test_names(c, fqdn):
    assert watcher.fqdn_for(c, "weave.local.") == fqdn


def test_dead_or_removed_docker_containers_are_detached_and_reconcile_repairs_both_ways():
    known = "b" * 64
    assert watcher.on_gone(known, {known, "wt-h1c1"}) == [watcher.Detach(known)]
    assert watcher.on_gone("c" * 64, {known}) == []
    running = [inspected()]
    actions = watcher.reconcile(running, {known, "wt-h1c1", "weave:expose"}, OURS, "weave.local.")
    assert actions == [watcher.on_start(running[0], OURS, "weave.local.")[0], watcher.Detach(known)]
    assert watcher.reconcile(running, {"a" * 64}, OURS, "weave.local.") == []


# -- the shell, over a real unix socket, with the stack on an in-memory bus ------------------------------------
@pytest.fixture
async def plugin(tmp_path):
    from services.docker_plugin.service import DockerPluginApp

    broker = MemoryBroker()
    stack, own = MemoryBus(broker, "stack"), MemoryBus(broker, "docker-plugin")
    seen: list = []

    async def endpoint(req: EndpointRequest) -> EndpointReply:
        seen.append(("endpoint", req.endpoint_id))
        return EndpointReply(host_ifname="vethwl" + req.endpoint_id[:9], guest_ifname="vethwg" + req.endpoint_id[:9],
                             mac="7a:00:00:00:00:09")

    async def allocate(req: AllocateRequest) -> AllocateReply:
        seen.append(("allocate", req.ident, req.subnet, req.is_container))
        return AllocateReply(cidr="10.32.0.9/12")

    async def claim(req: ClaimRequest) -> Ok:
        seen.append(("claim", req.ident, req.cidr))
        return Ok()

    async def release(req: ReleaseRequest) -> Ok:
        seen.append(("release", req.ident, req.addr))
        return Ok()

    async def status(_: StatusRequest) -> StatusReply:
        return StatusReply(status="ready", range="10.32.0.0/12", range_num_ips=1 << 20, default_subnet="10.32.0.0/12",
                           active_ips=0, entries=(), pending_allocates=0, pending_claims=0, mode="consensus",
                           quorum=1)

    await stack.serve(subjects.request("datapath", "endpoint_create"), EndpointRequest, endpoint)
    await stack.serve(subjects.request("ipam", "allocate"), AllocateRequest, allocate)
    await stack.serve(subjects.request("ipam", "claim"), ClaimRequest, claim)
    await stack.serve(subjects.request("ipam", "release"), ReleaseRequest, release)
    await stack.serve(subjects.request("ipam", "status"), StatusRequest, status)
    launch = LaunchConfig(state_dir=tmp_path, docker_host=f"unix://{tmp_path}/no-engine.sock",
                          docker_plugin_dir=str(tmp_path / "plugins"))
    app = DockerPluginApp()
    await app.start(ServiceContext("docker-plugin", for_service("docker-plugin", launch), own, CollectorRegistry(),
                                   RealClock(), HttpRouter()))
    session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(tmp_path / "plugins" / "weave.sock")))

    async def call(path: str, payload) -> dict:
        async with session.post(f"http://plugin{path}", data=json.dumps(payload)) as resp:
            assert resp.status == 200
            return await resp.json(content_type=None)

    yield call, seen, app
    await session.close()
    await app.stop()


async def test_the_service_answers_dockers_calls_with_the_stacks_help(plugin, tmp_path):
    call, seen, app = plugin
    assert sorted(p.name for p in (tmp_path / "plugins").iterdir()) == ["weave.sock", "weavemesh.sock"]
    assert await call("/Plugin.Activate", {}) == {"Implements": ["NetworkDriver", "IpamDriver"]}
    assert await call("/IpamDriver.GetDefaultAddressSpaces", {}) == ipam.ADDRESS_SPACES
    pool = await call("/IpamDriver.RequestPool", {"AddressSpace": "weavelocal", "Pool": "", "V6": False})
    assert pool["PoolID"] == "weave-10.32.0.0/12-10.32.0.0/12"
    assert await call("/IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": ""}) == \
        {"Address": "10.32.0.9/12", "Data": {}}
    assert await call("/IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": "10.32.0.77"}) == \
        {"Address": "10.32.0.77/12", "Data": {}}
    assert await call("/NetworkDriver.CreateNetwork", {"NetworkID": NET, "Options": {}}) == {}
    created = await call("/NetworkDriver.CreateEndpoint", {"NetworkID": NET, "EndpointID": EP,
                                                          "Interface": {"Address": "10.32.0.9/12"}})
    assert created == {"Interface": {"MacAddress": "7a:00:00:00:00:09"}}
    assert await call("/NetworkDriver.Join", {"NetworkID": NET, "EndpointID": EP, "SandboxKey": "/sb"}) == \
        {"InterfaceName": {"SrcName": "vethwg" + EP[:9], "DstPrefix": "ethwe"}}
    assert await call("/IpamDriver.ReleaseAddress", {"PoolID": pool["PoolID"], "Address": "10.32.0.9"}) == {}
    assert seen == [("allocate", "_", "10.32.0.0/12", False), ("claim", "_", "10.32.0.77/12"),
                    ("endpoint", EP), ("release", "10.32.0.9", None)]
    # refusals are {"Err": ...}, Docker shows them
    assert "Not supported" in (await call("/NetworkDriver.CreateEndpoint", {"NetworkID": NET, "EndpointID": EP}))["Err"]
    assert "unknown method" in (await call("/NetworkDriver.Nope", {}))["Err"]
    err = await call("/NetworkDriver.DeleteEndpoint", {"NetworkID": NET, "EndpointID": EP})
    assert err["Err"].startswith("unavailable"), err  # no datapath answers endpoint_delete here
    healthy, detail = app.health()
    assert healthy and "not open" in detail  # no engine at docker_host: the events stream is not open
    await asyncio.sleep(0)
