"""`weave expose` NATs containers' traffic to other networks through the exposing host
(weaver's nat WEAVE chain, services/datapath/host_iptables.py), on real iptables in
testbed namespaces: a container on h1 reaches h2's underlay address, which has no route
back to the weave network, only while h1 masquerades for it."""
from __future__ import annotations

import subprocess

import pytest

from tests.e2e.procs import wait_until

pytestmark = pytest.mark.e2e
NET = "10.44.0.0/16"


def nat_rules(tb, host: str) -> list[str]:
    saved = tb.exec(host, ["iptables-save", "-t", "nat"]).stdout
    return [line for line in saved.splitlines() if line.startswith("-A WEAVE") or line == "-A POSTROUTING -j WEAVE"]


def pings(tb, src: str, ip: str) -> bool:
    return tb.exec(src, ["ping", "-c", "1", "-W", "1", ip], timeout=20).returncode == 0


def container(tb, h, k: int, addr: str) -> str:
    ns = f"{h.ns}c{k}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
    h.containers.append(ns)
    assert tb.weave(h, "attach", addr, ns).returncode == 0
    return ns


def test_expose_masquerades_hide_and_without_masquerade_undo_it_restart_restores(testbed_factory):
    tb = testbed_factory()
    tb.up(2)
    h1, h2 = tb.host("h1"), tb.host("h2")
    ns = container(tb, h1, 1, "10.44.1.1/16")
    subprocess.run(["ip", "-n", ns, "route", "add", "default", "via", "10.44.1.254"], check=True)
    tb.exec("h1", ["sysctl", "-qw", "net.ipv4.ip_forward=1"], check=True)
    assert not pings(tb, "h1c1", h2.addr)  # no gateway yet

    assert tb.weave(h1, "expose", "10.44.1.254/16").stdout.strip() == "10.44.1.254"
    assert nat_rules(tb, "h1") == ["-A POSTROUTING -j WEAVE",
                                   f"-A WEAVE -s {NET} -d 224.0.0.0/4 -j RETURN",
                                   f"-A WEAVE -s {NET} ! -d {NET} -j MASQUERADE"]
    wait_until(lambda: pings(tb, "h1c1", h2.addr), what="the container reaches h2 through h1's NAT")

    tb.weave(h1, "hide", "10.44.1.254/16")
    assert nat_rules(tb, "h1") == ["-A POSTROUTING -j WEAVE"]
    assert tb.weave(h1, "expose", "--without-masquerade", "10.44.1.254/16").returncode == 0
    assert nat_rules(tb, "h1") == ["-A POSTROUTING -j WEAVE", f"-A WEAVE -s {NET} -d 224.0.0.0/4 -j RETURN"]
    assert pings(tb, "h1", "10.44.1.1"), "still exposed: the host reaches the container"
    assert not pings(tb, "h1c1", h2.addr), "no NAT: h2 cannot answer 10.44.1.1"
    tb.weave(h1, "hide")
    assert tb.weave(h1, "expose", "10.44.1.254/16").returncode == 0

    # a restarted datapath re-applies the rules of what is exposed (Weave's reexpose)
    tb.exec("h1", ["iptables", "-t", "nat", "-F", "WEAVE"], check=True)
    assert nat_rules(tb, "h1") == ["-A POSTROUTING -j WEAVE"]
    assert tb.weave(h1, "restart", "datapath").returncode == 0
    wait_until(lambda: len(nat_rules(tb, "h1")) == 3, what="rules restored by the restarted datapath")
    wait_until(lambda: pings(tb, "h1c1", h2.addr), what="NAT again after the restart")


def test_without_npc_weavers_forward_rules_and_the_expose_chain(testbed_factory):
    tb = testbed_factory()
    tb.up(1, launch=False)
    tb.launch_all(launch_args=("--no-npc",))
    h1 = tb.host("h1")
    tb.weave(h1, "expose", "10.44.1.254/16")
    saved = tb.exec("h1", ["iptables-save", "-t", "filter"]).stdout.splitlines()
    forward = [line for line in saved if line.startswith("-A FORWARD")]
    assert forward[:4] == ["-A FORWARD -i weave -o weave -j ACCEPT", "-A FORWARD -o weave -j WEAVE-EXPOSE",
                           "-A FORWARD -i weave ! -o weave -j ACCEPT",
                           "-A FORWARD -o weave -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"]
    assert f"-A WEAVE-EXPOSE -d {NET} -j ACCEPT" in saved
    assert not any("WEAVE-NPC" in line for line in saved)
    tb.weave(h1, "stop")
    assert tb.weave(h1, "reset").returncode == 0
    after = tb.exec("h1", ["iptables-save"]).stdout
    assert "WEAVE" not in after, after
