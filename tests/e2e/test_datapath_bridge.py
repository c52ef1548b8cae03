"""The weave bridge and container attach on real kernel devices.

Each test gets its own namespaces named `wtb-<random>-<role>`: one "host" (where the
bridge lives) and containers. Nothing is made in the root namespace; every namespace
and every process started here is removed by the fixture, also on failure. The kernel
state is read back with `ip`, `sysctl` and `ethtool`, not with the code under test.
"""
from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import subprocess
import time

import pytest

from services.datapath import attach as att
from services.datapath.attach import attach, detach, expose, hide, list_attached, parse_addrs
from services.datapath.bridge import (BRIDGE_PORT, PCAP_PORT, bridge_state, destroy_bridge, ensure_bridge,
                                      mac_of_peer_name)
from services.datapath.netns import BadRequest, Conflict, NotFound, open_namespace
from services.datapath.sleeve.offload import GSO_MAX_SIZE
from shared.errors import LocalProtocolError

PEER = "aa:00:00:00:00:01"
pytestmark = pytest.mark.e2e


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=30)


def links(ns: str) -> dict[str, dict]:
    return {link["ifname"]: link for link in json.loads(sh("ip", "-n", ns, "-d", "-j", "link", "show").stdout)}


def without_timers(value):
    """A link dump minus the running timers (gc_timer, forward_delay_timer...), which tick."""
    if isinstance(value, dict):
        return {k: without_timers(v) for k, v in value.items() if not k.endswith("_timer")}
    return value


def addrs(ns: str, dev: str) -> list[str]:
    out = json.loads(sh("ip", "-n", ns, "-j", "-4", "addr", "show", "dev", dev).stdout)
    return [f"{a['local']}/{a['prefixlen']}" for i in out for a in i["addr_info"]]


def routes(ns: str) -> list[str]:
    return sh("ip", "-n", ns, "-4", "route", "show").stdout.splitlines()


def sysctl(ns: str, key: str) -> str:
    return sh("ip", "netns", "exec", ns, "sysctl", "-n", key).stdout.strip()


def ping(ns: str, ip: str) -> bool:
    return sh("ip", "netns", "exec", ns, "ping", "-c1", "-W2", ip, check=False).returncode == 0


class Scratch:
    """Namespaces and processes of one test, all removed by `cleanup`."""

    def __init__(self) -> None:
        self.prefix = f"wtb-{secrets.token_hex(3)}"
        self.names: list[str] = []
        self.procs: list[subprocess.Popen] = []

    def ns(self, role: str) -> str:
        name = f"{self.prefix}-{role}"
        sh("ip", "netns", "add", name)
        self.names.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def sleeper(self, *prefix: str) -> int:
        """A `sleep` run under `prefix` (ip netns exec NS / unshare --net); its pid once it
        has left our namespace."""
        proc = subprocess.Popen([*prefix, "sleep", "120"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        mine, deadline = os.stat("/proc/self/ns/net").st_ino, time.monotonic() + 10
        while os.stat(f"/proc/{proc.pid}/ns/net").st_ino == mine:
            assert time.monotonic() < deadline, "the sleeper never entered its namespace"
            time.sleep(0.005)
        return proc.pid

    def kill(self, proc: subprocess.Popen) -> None:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def cleanup(self) -> None:
        for proc in self.procs:
            self.kill(proc)
        for name in self.names:
            sh("ip", "netns", "del", name, check=False)


@pytest.fixture
def scratch():
    s = Scratch()
    yield s
    s.cleanup()
    left = [n for n in sh("ip", "netns", "list").stdout.split() if n.startswith(s.prefix)]
    assert not left, f"namespaces left behind: {left}"


@pytest.fixture
def host(scratch) -> str:
    name = scratch.ns("host")
    ensure_bridge(name, peer_name=PEER)
    return name


# -- the bridge ------------------------------------------------------------------------
def test_bridge_has_weaves_settings_and_a_second_call_changes_nothing(scratch):
    host = scratch.ns("host")
    state = ensure_bridge(host, peer_name=PEER)
    assert (state.mac, state.mtu, state.up, state.pcap_ifname) == (PEER, 65535, True, PCAP_PORT)

    before = links(host)
    br, port, pcap = before["weave"], before[BRIDGE_PORT], before[PCAP_PORT]
    assert br["linkinfo"]["info_kind"] == "bridge" and br["address"] == PEER and br["mtu"] == 65535
    assert "UP" in br["flags"] and "UP" in port["flags"] and "UP" in pcap["flags"]
    assert port["master"] == "weave" and port["link"] == PCAP_PORT and pcap.get("master") is None
    assert port["mtu"] == pcap["mtu"] == 65535
    for key, value in (("base_reachable_time", "5"), ("delay_first_probe_time", "2"), ("ucast_solicit", "1")):
        assert sysctl(host, f"net.ipv4.neigh.weave.{key}") == value
    assert sysctl(host, "net.ipv6.conf.weave.accept_ra") == "0"
    ethtool = sh("ip", "netns", "exec", host, "ethtool", "-k", "weave").stdout
    assert "tx-checksumming: off" in ethtool

    again = ensure_bridge(host, peer_name=PEER)
    assert again == state and without_timers(links(host)) == without_timers(before)


def test_bridge_mtu_is_pinned_and_a_lost_port_is_repaired(scratch, host):
    c1 = scratch.ns("c1")
    attach(c1, ["10.32.0.1/12"], host=host, mtu=1376)
    assert links(host)["weave"]["mtu"] == 65535  # a smaller port does not shrink it
    assert links(c1)["ethwe"]["mtu"] == 1376

    sh("ip", "-n", host, "link", "del", PCAP_PORT)  # takes vethwe-bridge with it
    ensure_bridge(host, peer_name=PEER)
    after = links(host)
    assert after[BRIDGE_PORT]["master"] == "weave" and "UP" in after[PCAP_PORT]["flags"]


def test_bridge_errors_and_destroy(scratch, host):
    with pytest.raises(BadRequest):
        ensure_bridge(host, peer_name="01:00:00:00:00:01")  # multicast
    with pytest.raises(BadRequest):
        ensure_bridge(host, peer_name=PEER, mtu=70000)
    other = scratch.ns("other")
    sh("ip", "-n", other, "link", "add", "weave", "type", "veth", "peer", "name", "x")
    with pytest.raises(Conflict):
        ensure_bridge(other, peer_name=PEER)
    with pytest.raises(NotFound, match="launch weave"):
        attach(scratch.ns("c9"), ["10.32.0.9/12"], host=scratch.ns("nobridge"))

    c1 = scratch.ns("c1")
    attach(c1, ["10.32.0.1/12"], host=host)
    removed = destroy_bridge(host)
    assert set(removed) >= {"weave", BRIDGE_PORT} and any(n.startswith("vethwepl") for n in removed)
    assert set(links(host)) == {"lo"} and "ethwe" not in links(c1)
    assert destroy_bridge(host) == []
    with pytest.raises(NotFound):
        bridge_state(host)


# -- attach ----------------------------------------------------------------------------
def test_two_containers_ping_across_the_bridge(scratch, host):
    c1, c2 = scratch.ns("c1"), scratch.ns("c2")
    a1 = attach(c1, [("10.32.0.1", 12)], host=host)
    a2 = attach(c2, ["10.32.0.2/12"], host=host, mac="02:00:00:00:00:02")
    assert ping(c1, "10.32.0.2") and ping(c2, "10.32.0.1")

    ethwe = links(c1)["ethwe"]
    assert (a1.container, a1.ifname, a1.mac, a1.cidrs) == (c1, "ethwe", ethwe["address"], ("10.32.0.1/12",))
    assert a2.mac == "02:00:00:00:00:02" and "UP" in ethwe["flags"]
    port = links(host)[a1.host_ifname]
    assert len(a1.host_ifname) <= 15 and port["master"] == "weave" and port["mtu"] == 65535
    assert "10.32.0.0/12 dev ethwe proto kernel scope link src 10.32.0.1 " in routes(c1)
    assert any(r.startswith("224.0.0.0/4 dev ethwe") for r in routes(c1))
    assert sysctl(c1, "net.ipv4.neigh.ethwe.ucast_solicit") == "1"
    features = sh("ip", "netns", "exec", c1, "ethtool", "-k", "ethwe").stdout
    assert "tx-checksumming: on" in features and "tcp-segmentation-offload: on" in features  # offloads kept
    assert sh("ip", "-n", c1, "-d", "-j", "link", "show", "ethwe").stdout.count(f'"gso_max_size":{GSO_MAX_SIZE}') == 1

    assert list_attached(host) == [a1, a2]


def test_host_ports_from_libc_in_its_own_namespace_match_a_netlink_dump(scratch, host):
    """The datapath's reconcile asks for the container veths in its own namespace
    (libc's interface list); elsewhere it is a netlink dump (shared/netlink.py): the same."""
    c1, c2 = scratch.ns("c1"), scratch.ns("c2")
    a1, a2 = attach(c1, ["10.32.0.1/12"], host=host), attach(c2, ["10.32.0.2/12"], host=host)
    with open_namespace(host) as hns:
        assert hns.run(att.host_ports) == att.host_ports(host) == {a1.host_ifname, a2.host_ifname}
        # one veth goes (deleting it here is synchronous; a namespace's teardown is not)
        sh("ip", "netns", "exec", host, "ip", "link", "del", a2.host_ifname)
        assert hns.run(att.host_ports) == att.host_ports(host) == {a1.host_ifname}


def test_no_multicast_route_when_disabled(scratch, host):
    c1 = scratch.ns("c1")
    attach(c1, ["10.32.0.1/12"], host=host, multicast_route=False)
    assert not any(r.startswith("224.0.0.0/4") for r in routes(c1))


def test_attach_by_path_by_pid_and_reattach_adds_addresses(scratch, host):
    c1, c2 = scratch.ns("c1"), scratch.ns("c2")
    by_path = attach(f"/var/run/netns/{c1}", ["10.32.0.1/12"], host=host)
    assert by_path.container == c1

    pid = scratch.sleeper("ip", "netns", "exec", c2)
    by_pid = attach(pid, ["10.32.0.2/12"], host=host)
    assert by_pid.container == str(pid) and addrs(c2, "ethwe") == ["10.32.0.2/12"]
    again = attach(c2, ["10.32.0.2/12", "10.40.0.2/16"], host=host)  # same container, by name
    assert again.host_ifname == by_pid.host_ifname and again.cidrs == ("10.32.0.2/12", "10.40.0.2/16")
    assert any(r.startswith("10.40.0.0/16 dev ethwe") for r in routes(c2))

    unnamed = scratch.sleeper("unshare", "--net")  # reachable only through its pid
    attach(str(unnamed), ["10.32.0.3/12"], host=host)
    assert ping(c1, "10.32.0.3")
    assert [a.container for a in list_attached(host)] == [c1, c2, str(unnamed)]
    scratch.kill(scratch.procs[-1])  # the namespace dies with its only process...
    deadline = time.monotonic() + 10
    while len(list_attached(host)) != 2:  # ...and the kernel removes its veth
        assert time.monotonic() < deadline
        time.sleep(0.02)
    with pytest.raises(NotFound, match="does not exist"):
        attach(unnamed, ["10.32.0.3/12"], host=host)


def test_duplicate_address_is_a_conflict_and_leaves_nothing(scratch, host):
    c1, c2 = scratch.ns("c1"), scratch.ns("c2")
    attach(c1, ["10.32.0.1/12"], host=host)
    expose(["10.32.0.254/12"], host=host)
    before = set(links(host))
    for taken in ("10.32.0.1/12", "10.32.0.1/24", "10.32.0.254/12"):
        with pytest.raises(Conflict) as err:
            attach(c2, ["10.32.0.2/12", taken], host=host)
        assert err.value.code == "conflict" and err.value.attrs["address"] == taken
    assert "ethwe" not in links(c2) and set(links(host)) == before
    attach(c1, ["10.32.0.1/12"], host=host)  # its own address again: fine


def test_a_failure_after_creation_rolls_back(scratch, host, monkeypatch):
    c1, c2 = scratch.ns("c1"), scratch.ns("c2")
    attach(c2, ["10.32.0.5/12"], host=host)
    before = set(links(host))

    def broken_route(*args):
        raise OSError("injected: route add failed")

    monkeypatch.setattr(att, "_add_route", broken_route)
    with pytest.raises(OSError, match="injected"):
        attach(c1, ["10.32.0.1/12"], host=host)  # a new veth: deleted again
    assert "ethwe" not in links(c1) and set(links(host)) == before
    with pytest.raises(OSError, match="injected"):
        attach(c2, ["10.32.0.6/12"], host=host)  # an existing one: only the new address goes
    assert addrs(c2, "ethwe") == ["10.32.0.5/12"] and set(links(host)) == before


def test_detach_removes_addresses_then_the_interface(scratch, host):
    c1 = scratch.ns("c1")
    a = attach(c1, ["10.32.0.1/12", "10.40.0.1/16"], host=host)
    left = detach(c1, ["10.40.0.1/16", "10.99.0.1/16"], host=host)  # an absent one is ignored
    assert left.cidrs == ("10.32.0.1/12",) and addrs(c1, "ethwe") == ["10.32.0.1/12"]
    assert detach(c1, ["10.32.0.1/12"], host=host) is None
    assert "ethwe" not in links(c1) and a.host_ifname not in links(host) and list_attached(host) == []

    attach(c1, ["10.32.0.1/12"], host=host)
    assert detach(c1, host=host) is None and "ethwe" not in links(c1)
    with pytest.raises(NotFound, match="not attached"):
        detach(c1, host=host)


def test_expose_lets_the_host_reach_a_container_and_hide_undoes_it(scratch, host):
    c1 = scratch.ns("c1")
    attach(c1, ["10.32.0.1/12"], host=host)
    assert not ping(host, "10.32.0.1")
    rec = expose(["10.32.0.254/12"], host=host)
    assert expose(["10.32.0.254/12"], host=host) == rec  # idempotent
    assert rec.container == "weave:expose" and rec.cidrs == ("10.32.0.254/12",) and rec.mac == PEER
    assert addrs(host, "weave") == ["10.32.0.254/12"] and ping(host, "10.32.0.1")
    assert list_attached(host)[0] == rec

    assert hide(["10.32.0.254/12"], host=host).cidrs == ()
    assert hide(["10.32.0.254/12"], host=host).cidrs == ()
    assert addrs(host, "weave") == [] and list_attached(host)[0].container == c1


# -- errors ----------------------------------------------------------------------------
def test_missing_namespaces_and_bad_arguments(scratch, host):
    missing = f"{scratch.prefix}-missing"
    with pytest.raises(NotFound) as err:
        attach(missing, ["10.32.0.1/12"], host=host)
    assert err.value.code == "not_found" and "ip netns add" in err.value.message
    with pytest.raises(NotFound):
        attach(scratch.ns("c1"), ["10.32.0.1/12"], host=missing)
    assert missing not in sh("ip", "netns", "list").stdout and not os.path.exists(f"/var/run/netns/{missing}")

    with pytest.raises(NotFound, match="process"):
        attach(4_000_000, ["10.32.0.1/12"], host=host)  # above pid_max: never a live pid
    with pytest.raises(BadRequest, match="not a network namespace"):
        open_namespace("/etc/hostname")
    with pytest.raises(BadRequest, match="host's network namespace"):
        attach(host, ["10.32.0.1/12"], host=host)
    c2 = scratch.ns("c2")
    for bad in (["10.32.0.300/12"], ["10.32.0.1"], [("10.32.0.1", 0)], ["224.0.0.1/4"], ["fe80::1/64"], [42]):
        with pytest.raises(BadRequest) as err:
            attach(c2, bad, host=host)
        assert err.value.code == "bad_request"
    with pytest.raises(BadRequest):
        attach(c2, ["10.32.0.1/12"], host=host, mac="ff:ff:ff:ff:ff:ff")
    with pytest.raises(BadRequest):
        attach(c2, ["10.32.0.1/12"], host=host, ifname="a-name-that-is-too-long")
    assert "ethwe" not in links(c2)


def test_parse_addrs_and_macs():
    assert [str(a) for a in parse_addrs([("10.32.0.1", 12), "10.32.0.1/12", "10.40.0.1/16"])] == \
        ["10.32.0.1/12", "10.40.0.1/16"]
    assert [str(a) for a in parse_addrs("10.32.0.1/12")] == ["10.32.0.1/12"]
    assert mac_of_peer_name("AA:00:00:00:00:01") == PEER and mac_of_peer_name(0xAA0000000001) == PEER
    with pytest.raises(BadRequest):
        mac_of_peer_name("aa:00:00:00:01")


async def test_blocking_calls_refuse_an_event_loop_thread_and_work_via_to_thread(scratch):
    host = scratch.ns("host")
    with pytest.raises(LocalProtocolError, match="to_thread"):
        ensure_bridge(host, peer_name=PEER)
    state = await asyncio.to_thread(ensure_bridge, host, peer_name=PEER)
    assert state.mac == PEER
