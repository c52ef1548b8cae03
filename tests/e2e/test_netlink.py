"""shared/netlink.py against the kernel: every request the project makes, in scratch
namespaces (`wnl-<random>-*`, removed also on failure), read back with `ip` and `bridge`,
not with the code under test."""
from __future__ import annotations

import errno
import json
import os
import secrets
import subprocess

import pytest

from shared.netlink import IPRoute, NetlinkError
from shared.netns import open_namespace

pytestmark = pytest.mark.e2e


def sh(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=30).stdout


@pytest.fixture
def two():
    prefix = f"wnl-{secrets.token_hex(3)}"
    names = [f"{prefix}-host", f"{prefix}-peer"]
    for name in names:
        sh("ip", "netns", "add", name)
    try:
        yield names
    finally:
        for name in names:
            subprocess.run(["ip", "netns", "del", name], check=False)


def test_links_addresses_routes_fdb_hairpin_and_nsid_as_the_kernel_shows_them(two):
    host, peer = two
    with open_namespace(host) as hns, open_namespace(peer) as pns:
        def work() -> dict:
            with hns.iproute() as ipr:
                ipr.link("add", ifname="br0", kind="bridge", address="aa:00:00:00:00:01")
                br = ipr.link_lookup(ifname="br0")[0]
                ipr.link("set", index=br, mtu=1400, state="up")
                ipr.link("add", ifname="va", kind="veth", mtu=1400,
                         peer={"ifname": "vb", "mtu": 1400, "net_ns_fd": pns.fd, "address": "aa:00:00:00:00:02"})
                va = ipr.link_lookup(ifname="va")[0]
                ipr.link("set", index=va, master=br, state="up", gso_max_size=65000)
                ipr.link("add", ifname="vx", kind="vxlan", vxlan_id=42, vxlan_local="10.1.0.1", vxlan_port=6784,
                         vxlan_learning=1)
                vx = ipr.link_lookup(ifname="vx")[0]
                ipr.link("set", index=vx, mtu=1376, master=br, state="up")
                for ip in ("10.1.0.1", "10.1.0.2"):
                    ipr.addr("add", index=br, address=ip, prefixlen=24)
                ipr.addr("del", index=br, address="10.1.0.2", prefixlen=24)
                ipr.route("add", dst="224.0.0.0", dst_len=4, oif=br, scope=253)
                ipr.route("replace", dst="10.9.0.0/16", gateway="10.1.0.254", oif=br)
                for dst in ("10.1.0.7", "10.1.0.8"):
                    ipr.fdb("append", ifindex=vx, lladdr="00:00:00:00:00:00", dst=dst)
                ipr.fdb("del", ifindex=vx, lladdr="00:00:00:00:00:00", dst="10.1.0.8")
                ipr.brport("set", index=va, hairpin_mode=1)
                errors = []
                for bad in (lambda: ipr.link("add", ifname="br0", kind="bridge"), lambda: ipr.get_links(99999),
                            lambda: ipr.addr("del", index=br, address="10.1.0.9", prefixlen=24)):
                    try:
                        bad()
                    except NetlinkError as exc:
                        errors.append(exc.code)
                links = {link.get("ifname"): link for link in ipr.get_links()}
                return {
                    "br": br, "va": va, "vx": vx, "errors": errors, "missing": ipr.link_lookup(ifname="nope"),
                    "links": links, "one": ipr.get_links(vx)[0],
                    "addrs": [(a["index"], a.get("IFA_ADDRESS"), a["prefixlen"]) for a in ipr.get_addr(family=2)],
                    "by_address": [a["index"] for a in ipr.get_addr(address="10.1.0.1")],
                    "fdb": sorted((m.get_attr("NDA_LLADDR"), m.get_attr("NDA_DST")) for m in ipr.fdb("dump", ifindex=vx)
                                  if m.get_attr("NDA_DST")),
                    "nsid": ipr.get_netnsid(fd=pns.fd)["nsid"],
                }

        got = hns.run(work)

    assert got["errors"] == [errno.EEXIST, errno.ENODEV, errno.EADDRNOTAVAIL] and got["missing"] == []
    shown = {link["ifname"]: link for link in json.loads(sh("ip", "-n", host, "-d", "-j", "link", "show"))}
    br, va, vx = shown["br0"], shown["va"], shown["vx"]
    assert br["address"] == "aa:00:00:00:00:01" and br["mtu"] == 1400 and "UP" in br["flags"]
    assert br["linkinfo"]["info_kind"] == "bridge"
    assert va["master"] == "br0" and "UP" in va["flags"] and va["gso_max_size"] == 65000
    assert va["linkinfo"]["info_slave_data"]["hairpin"] is True
    vxlan = vx["linkinfo"]["info_data"]
    assert (vxlan["id"], vxlan["local"], vxlan["port"], vxlan["learning"]) == (42, "10.1.0.1", 6784, True)
    assert vx["master"] == "br0" and vx["mtu"] == 1376
    vb = json.loads(sh("ip", "-n", peer, "-j", "link", "show", "vb"))[0]
    assert vb["address"] == "aa:00:00:00:00:02" and vb["mtu"] == 1400

    assert [a["local"] for a in json.loads(sh("ip", "-n", host, "-j", "-4", "addr", "show", "br0"))[0]["addr_info"]] \
        == ["10.1.0.1"]
    routes = sh("ip", "-n", host, "-4", "route", "show").splitlines()
    assert "224.0.0.0/4 dev br0 proto static scope link " in routes
    assert "10.9.0.0/16 via 10.1.0.254 dev br0 proto static " in routes
    assert "00:00:00:00:00:00 dst 10.1.0.7 self permanent" in sh("ip", "netns", "exec", host, "bridge", "fdb",
                                                                   "show", "dev", "vx")

    # what the handle read back is what `ip` shows
    links = got["links"]
    assert links["va"]["index"] == got["va"] and links["va"].get("master") == got["br"]
    assert links["va"].get("IFLA_LINK_NETNSID") == got["nsid"] == va["link_netnsid"]
    assert links["br0"].get("address") == "aa:00:00:00:00:01" and links["br0"].get("mtu") == 1400
    info = got["one"].get_attr("IFLA_LINKINFO")
    assert info.get_attr("IFLA_INFO_KIND") == "vxlan" and got["one"].get_attr("IFLA_MTU") == 1376
    assert info.get_attr("IFLA_INFO_DATA").get_attr("IFLA_VXLAN_ID") == 42
    assert info.get_attr("IFLA_INFO_DATA").get_attr("IFLA_VXLAN_PORT") == 6784
    assert (got["br"], "10.1.0.1", 24) in got["addrs"] and got["by_address"] == [got["br"]]
    assert got["fdb"] == [("00:00:00:00:00:00", "10.1.0.7")]


def test_a_dump_of_many_links_spans_several_datagrams(two):
    host, _ = two
    for i in range(120):
        sh("ip", "-n", host, "link", "add", f"br{i}", "type", "bridge")
    with open_namespace(host) as hns:
        names = hns.run(lambda: [link.get("ifname") for link in _dump()])
    assert sorted(names) == sorted(["lo", *(f"br{i}" for i in range(120))])


def _dump():
    with IPRoute() as ipr:
        return ipr.get_links()


def test_a_handle_starts_no_thread_and_an_unknown_argument_is_named(two):
    host, _ = two
    with open_namespace(host) as hns:
        def work():
            before = len(os.listdir("/proc/self/task"))
            with IPRoute() as ipr:
                ipr.get_links()
                with pytest.raises(TypeError, match="txqlen"):
                    ipr.link("set", index=1, txqlen=5)
                return len(os.listdir("/proc/self/task")) - before
        assert hns.run(work) == 0


def test_bench_netlink_prints_its_rows():
    import sys
    out = subprocess.run([sys.executable, "-m", "bench.netlink", "--links", "3", "--calls", "20"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    assert "with 7 links" in out  # lo and three veth pairs
    rows = {line[:28].strip(): float(line[28:40]) for line in out.splitlines()[2:8]}
    assert set(rows) == {"import (ms)", "first handle + dump (ms)", "link dump (ms)", "lookup by name (us)",
                         "set mtu (us)", "open + close handle (us)"}
    assert all(v > 0 for v in rows.values())
    assert not [n for n in sh("ip", "netns", "list").split() if n.startswith("wnb")]  # its namespace is gone
