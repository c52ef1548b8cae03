"""The gossip service on real TCP between testbed hosts: mesh formation with a password,
discovery, gossip relayed without discovery, a killed router re-forming the mesh, and
a peer with the wrong password refused."""
from __future__ import annotations

import json

from tests.e2e.procs import wait_until




def connections(tb, host) -> list[str]:
    out = tb.weave(host, "status", "connections", check=False)
    return out.stdout.splitlines() if out.returncode == 0 else []


def established(tb, host) -> list[str]:
    return [line for line in connections(tb, host) if " established " in line]


def report(tb, host) -> dict:
    return json.loads(tb.weave(host, "report").stdout)


def test_full_mesh_with_password(testbed_factory):
    tb = testbed_factory()
    tb.up(3, password="s3cret")
    for h in ("h1", "h2", "h3"):
        lines = wait_until(lambda h=h: len(established(tb, h)) == 2 and established(tb, h), what=f"{h} mesh")
        assert all("encrypted " in line and "unencrypted" not in line for line in lines), lines
    def routed() -> dict | None:  # routes follow the topology gossip that makes a link symmetric
        rep = report(tb, "h1")["Router"]
        return rep if {r["Dest"] for r in rep["UnicastRoutes"] or ()} >= {"aa:00:00:00:00:02", "aa:00:00:00:00:03"} \
            else None
    rep = wait_until(routed, what="h1's unicast routes to h2 and h3")
    assert rep["Encryption"] is True and rep["Name"] == "aa:00:00:00:00:01"
    assert sorted(p["NickName"] for p in rep["Peers"]) == ["h1", "h2", "h3"]
    assert {r["Dest"]: r["Via"] for r in rep["UnicastRoutes"]}["aa:00:00:00:00:03"] == "aa:00:00:00:00:03"
    status = wait_until(lambda: (out := tb.weave("h2", "status").stdout) and
                        "Peers: 3 (with 6 established connections)" in out and out,
                        what="h2 knowing every peer's connections")
    assert "Encryption: enabled" in status
    metrics = tb.exec("h1", ["python3", "-c", "import urllib.request;print(urllib.request.urlopen("
                                               "'http://127.0.0.1:6782/metrics').read().decode())"]).stdout
    established_encrypted = [line for line in metrics.splitlines()
                             if line.startswith('weave_connections{encryption="yes",state="established"')]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in established_encrypted) == 2.0, metrics


def test_chain_with_discovery_forms_direct_link(testbed_factory):
    tb = testbed_factory()
    tb.up(3, launch=False)
    tb.launch(tb.host("h1"), peers=[])
    tb.launch(tb.host("h2"), peers=["192.168.77.1"])
    tb.launch(tb.host("h3"), peers=["192.168.77.2"])
    wait_until(lambda: any("192.168.77.3" in line for line in established(tb, "h1")), what="h1-h3 direct")
    assert tb.weave("h1", "status", "targets").stdout == "", "h1 was told of no peer: h3 came by discovery"


def test_no_discovery_gossip_flows_through_the_middle(testbed_factory):
    tb = testbed_factory()
    tb.up(3, launch=False)
    for h, peers in (("h1", []), ("h2", ["192.168.77.1", "192.168.77.3"]), ("h3", [])):
        tb.launch(tb.host(h), peers=peers, launch_args=("--no-discovery",))
    wait_until(lambda: len(report(tb, "h1")["Router"]["Peers"]) == 3, what="h1 learns of h3 through h2")
    rep = report(tb, "h1")["Router"]
    assert len(established(tb, "h1")) == 1
    assert rep["PeerDiscovery"] is False
    assert {r["Dest"]: r["Via"] for r in rep["UnicastRoutes"]}["aa:00:00:00:00:03"] == "aa:00:00:00:00:02"


def test_killed_router_reforms_the_mesh(testbed_factory):
    tb = testbed_factory()
    tb.up(3)
    for h in ("h1", "h2", "h3"):
        wait_until(lambda h=h: len(established(tb, h)) == 2, what=f"{h} mesh")
    uid_before = {p["Name"]: p["UID"] for p in report(tb, "h1")["Router"]["Peers"]}["aa:00:00:00:00:02"]
    old = tb.kill_service("h2", "gossip")
    wait_until(lambda: tb.service_pid("h2", "gossip") not in (0, old), what="gossip restarted")
    for h in ("h1", "h2", "h3"):
        wait_until(lambda h=h: len(established(tb, h)) == 2, what=f"{h} mesh again")
    wait_until(lambda: {p["Name"]: p["UID"] for p in report(tb, "h1")["Router"]["Peers"]}
               .get("aa:00:00:00:00:02") not in (None, uid_before), what="h1 sees h2's new incarnation")


def test_wrong_password_is_refused(testbed_factory):
    tb = testbed_factory()
    tb.up(3, launch=False)
    tb.launch(tb.host("h1"), peers=["192.168.77.2", "192.168.77.3"], password="right")
    tb.launch(tb.host("h2"), peers=["192.168.77.1"], password="right")
    tb.launch(tb.host("h3"), peers=["192.168.77.1"], password="wrong")
    wait_until(lambda: len(established(tb, "h1")) == 1, what="h1-h2")
    # h3 keeps trying (backoff) and keeps being refused
    wait_until(lambda: report(tb, "h1")["Router"]["TerminationCount"] >= 2, what="two refusals of h3")
    assert established(tb, "h3") == []
    # whichever end decrypts first names the reason; the other may only see the reset
    logs = "".join((tb.root / h / "logs" / "gossip.log").read_text() for h in ("h1", "h3"))
    assert "decrypt" in logs, "the refusal names the reason"


def test_connect_and_forget(testbed_factory):
    tb = testbed_factory()
    tb.up(2, launch=False)
    tb.launch(tb.host("h1"), peers=[])
    tb.launch(tb.host("h2"), peers=[])
    assert established(tb, "h1") == []
    out = tb.weave("h1", "connect", "192.168.77.2")
    assert out.returncode == 0
    wait_until(lambda: len(established(tb, "h1")) == 1, what="connect")
    assert tb.weave("h1", "status", "targets").stdout == "192.168.77.2\n"
    bad = tb.weave("h1", "connect", "host:99999", check=False)
    assert bad.returncode == 1 and "invalid peer address" in bad.stderr
    tb.weave("h1", "forget", "192.168.77.2")
    assert tb.weave("h1", "status", "targets").stdout == ""
