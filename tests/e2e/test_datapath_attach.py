"""`weave attach / detach / ps / expose / hide` through the CLI against a launched host
(testbed, one host): what the kernel shows afterwards, what the datapath tells dns and
npc (weave.datapath.containers), and the errors a user gets, with nothing half-made
left behind. Every namespace and process is removed by the testbed fixture."""
from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.e2e

CONTAINERS = ("import asyncio,json,sys\nfrom pathlib import Path\nfrom shared import subjects\n"
              "from shared.schemas.datapath import ContainersReply, ContainersRequest\nfrom weavectl import launcher\n"
              "r=launcher.bus_request(Path(sys.argv[1]),subjects.request('datapath','containers'),"
              "ContainersRequest(),ContainersReply)\nprint(r.model_dump_json())")


LOOKUP = ("import sys\nfrom pathlib import Path\nfrom shared import subjects\nfrom shared.bus import BusError\n"
          "from shared.schemas.ipam import LookupReply, LookupRequest\nfrom weavectl import launcher\n"
          "try:\n r=launcher.bus_request(Path(sys.argv[1]),subjects.request('ipam','lookup'),"
          "LookupRequest(ident=sys.argv[2]),LookupReply)\n print(' '.join(r.cidrs))\n"
          "except BusError as e:\n print('')")


def ipam_holds(tb, h, ident: str) -> str:
    """The addresses IPAM holds for `ident`, space separated ('' when none)."""
    return tb.exec(h.nickname, [sys.executable, "-c", LOOKUP, h.state_dir, ident], check=True).stdout.strip()


def containers(tb, h) -> dict[str, dict]:
    """What the datapath tells dns and npc: container id -> its ContainerEvent."""
    out = tb.exec(h.nickname, [sys.executable, "-c", CONTAINERS, h.state_dir], check=True)
    return {c["container_id"]: c for c in json.loads(out.stdout)["containers"]}


def ns(tb, name: str) -> str:
    subprocess.run(["ip", "netns", "add", f"{tb.prefix}-{name}"], check=True)
    tb.host(1).containers.append(f"{tb.prefix}-{name}")  # so tb.exec can run there; removed by down
    return f"{tb.prefix}-{name}"


def addrs(tb, container: str) -> list[str]:
    out = tb.exec(container, ["ip", "-4", "-o", "addr", "show", "dev", "ethwe"]).stdout
    return [line.split()[3] for line in out.splitlines()]


def wait_for(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_attach_ps_detach_expose_hide(testbed_factory):
    tb = testbed_factory()
    tb.up(1, profile="test")
    h = tb.host(1)
    c1, c2 = ns(tb, "h1c1"), ns(tb, "h1c2")
    weave = lambda *a, check=True: tb.weave("h1", *a, check=check)  # noqa: E731

    out = weave("attach", "10.99.0.5/16", c1, "--name", "web.weave.local", "--label", "app=web", "--namespace", "prod")
    assert out.stdout == "10.99.0.5\n"
    assert addrs(tb, "h1c1") == ["10.99.0.5/16"]
    mac = tb.exec("h1c1", ["cat", "/sys/class/net/ethwe/address"]).stdout.strip()
    assert weave("ps").stdout == f"{c1} {mac} 10.99.0.5/16\n"
    event = containers(tb, h)[c1]
    assert (event["fqdn"], event["labels"], event["namespace"], event["mac"]) == \
        ("web.weave.local", {"app": "web"}, "prod", mac)
    assert wait_for(lambda: weave("dns-lookup", "web", check=False).stdout == "10.99.0.5\n"), \
        "weaveDNS learnt the --name from the datapath's ContainerEvent"

    assert weave("attach", "ip:10.98.0.5/24", c1).stdout == "10.98.0.5\n"  # more addresses
    assert addrs(tb, "h1c1") == ["10.99.0.5/16", "10.98.0.5/24"]
    assert containers(tb, h)[c1]["cidrs"] == ["10.99.0.5/16", "10.98.0.5/24"]

    # IPAM's default subnet when no address is given
    got = weave("attach", c2).stdout.strip()
    assert ipaddress.ip_address(got) in ipaddress.ip_network("10.32.0.0/12")
    assert addrs(tb, "h1c2") == [f"{got}/12"] and ipam_holds(tb, h, c2) == f"{got}/12"

    # errors: one line, exit 1, nothing half-made
    before = tb.exec("h1", ["ip", "-o", "link"]).stdout
    c3 = ns(tb, "h1c3")
    for argv, words in (
        (("10.99.0.5/16", c3), "already attached to"),  # the address is c1's
        (("10.99.0.6/16", f"{tb.prefix}-nosuch"), "does not exist"),
        (("10.99.0.300/16", c3), "invalid address"),
        (("net:10.99.0.0/40", c3), "invalid subnet"),
        (("10.99.0.7/16", c1, "--name", "other.weave.local"), "attached as web.weave.local"),
        (("10.99.0.8/16", c3, "--name", "bad..name"), "not a valid DNS name"),
    ):
        bad = weave("attach", *argv, check=False)
        assert bad.returncode == 1 and words in bad.stderr and len(bad.stderr.splitlines()) <= 2, (argv, bad.stderr)
    assert tb.exec("h1", ["ip", "-o", "link"]).stdout == before
    assert "ethwe" not in tb.exec("h1c3", ["ip", "-o", "link"]).stdout
    assert "10.99.0.7/16" not in addrs(tb, "h1c1")

    # expose gives the host an address on the weave network; hide takes it back
    assert weave("expose", "10.99.255.1/16", "-h", "host1.weave.local").stdout == "10.99.255.1\n"
    assert weave("ps").stdout.splitlines()[0] == "weave:expose aa:00:00:00:00:01 10.99.255.1/16"
    assert tb.exec("h1", ["ping", "-c1", "-W2", "10.99.0.5"]).returncode == 0
    assert containers(tb, h)["weave:expose"]["fqdn"] == "host1.weave.local"
    assert weave("hide").stdout == "10.99.255.1\n"
    assert not weave("ps").stdout.startswith("weave:expose")

    # detach: some addresses, then the rest; ps with a filter
    assert weave("detach", "net:10.98.0.0/16", c1).stdout == "10.98.0.5\n"
    assert weave("ps", c1).stdout == f"{c1} {mac} 10.99.0.5/16\n"
    assert weave("detach", c1).stdout == "10.99.0.5\n"
    assert "ethwe" not in tb.exec("h1c1", ["ip", "-o", "link"]).stdout and c1 not in containers(tb, h)
    assert wait_for(lambda: weave("dns-lookup", "web", check=False).stdout == ""), "the name went with it"
    bad = weave("detach", c1, check=False)
    assert bad.returncode == 1 and "not attached" in bad.stderr

    # a container that goes away is noticed and reported detached: when the kernel deletes
    # its veth (link_watch.py), not at the next look (the old 5 s poll took 3.2-3.4 s here)
    assert c2 in containers(tb, h)
    subprocess.run(["ip", "netns", "del", c2], check=True)
    deadline = time.monotonic() + 3
    while c2 in containers(tb, h):
        assert time.monotonic() < deadline, "the vanished container is still listed"
        time.sleep(0.3)
    assert weave("ps").stdout == ""
    assert wait_for(lambda: ipam_holds(tb, h, c2) == ""), "its IPAM address was released"
