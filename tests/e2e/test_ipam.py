"""The ipam service on real hosts (testbed namespaces, real nats, real TCP mesh): consensus
and concurrent allocation with no duplicates, Weave's HTTP routes and their errors,
persistence across a restart, rmpeer after a host's whole stack is killed, an observer
that cannot vote, and rings seeded differently that refuse to merge."""
from __future__ import annotations

import ipaddress
import json
import re
import sys
from concurrent.futures import ThreadPoolExecutor

from weavectl.testbed import Testbed
from tests.e2e.procs import wait_until

RANGE = ipaddress.ip_network("10.32.0.0/12")
TEST = {"profile": "test"}

# Runs inside a host namespace: HTTP requests to Weave's API port, concurrently; prints
# [[status, body], ...] in request order.
CLIENT = r"""
import json, sys, urllib.error, urllib.request
from concurrent.futures import ThreadPoolExecutor
def call(op):
    method, path = op
    data = b"" if method in ("POST", "PUT") else None
    req = urllib.request.Request("http://127.0.0.1:" + path, data=data, method=method)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return [r.status, r.read().decode()]
    except urllib.error.HTTPError as e:
        return [e.code, e.read().decode()]
with ThreadPoolExecutor(64) as pool:
    print(json.dumps(list(pool.map(call, json.loads(sys.argv[1])))))
"""


def http(tb: Testbed, host: str, *ops: tuple[str, str], port: int = 6784) -> list[tuple[int, str]]:
    """Send (method, path) requests to a host's API concurrently; [(status, body)] in order."""
    argv = [sys.executable, "-c", CLIENT, json.dumps([[m, f"{port}{p}"] for m, p in ops])]
    proc = tb.exec(host, argv, check=True, timeout=120)
    return [tuple(r) for r in json.loads(proc.stdout)]


def get(tb: Testbed, host: str, path: str, port: int = 6784) -> str:
    code, body = http(tb, host, ("GET", path), port=port)[0]
    assert code == 200, (host, path, code, body)
    return body




def ipam_report(tb: Testbed, host: str) -> dict:
    return json.loads(get(tb, host, "/report"))["IPAM"]


def ring_owners(tb: Testbed, host: str) -> set[str]:
    return {e["Nickname"] or e["Peer"] for e in ipam_report(tb, host)["Entries"] or () if e["Size"]}


def status_line(tb: Testbed, host: str) -> str:
    """The ipam Status of `weave status`. (The gossip service gives each section 2 s;
    on a loaded machine a section may be missing from one answer, so ask again.)"""
    found = wait_until(lambda: re.search(r"Status: (.*)", get(tb, host, "/status")), timeout=15, what="ipam section")
    return found.group(1)


def owned(tb: Testbed, host: str) -> dict[str, list[str]]:
    return {row["containerid"]: row["addrs"] for row in json.loads(get(tb, host, "/ip"))["owned"] or ()}


def metric(tb: Testbed, host: str, name: str) -> float:
    text = get(tb, host, "/metrics", port=6790)
    return float(re.search(rf"^{re.escape(name)} (\S+)$", text, re.M).group(1))


def allocate_concurrently(tb: Testbed, hosts: list[str], n: int, tag: str = "") -> dict[str, str]:
    """n allocations on every host at once, all hosts in parallel; {ident: cidr}."""
    def on(host: str) -> list[tuple[str, str]]:
        replies = http(tb, host, *[("POST", f"/ip/{tag}{host}-{i}") for i in range(n)])
        assert all(code == 200 for code, _ in replies), replies
        return [(f"{tag}{host}-{i}", body) for i, (_, body) in enumerate(replies)]

    with ThreadPoolExecutor(len(hosts)) as pool:
        return dict(pair for pairs in pool.map(on, hosts) for pair in pairs)


def h3_subnet(report: dict) -> str:
    """A /24 lying wholly inside one of h3's ranges."""
    for e in report["Entries"]:
        if e["Nickname"] == "h3" and e["Size"] >= 512:
            start = (int(ipaddress.ip_address(e["Token"])) + 255) // 256 * 256
            return f"{ipaddress.ip_address(start)}/24"
    raise AssertionError(f"h3 owns no range of 512 addresses: {report['Entries']}")


def test_consensus_allocation_restart_and_rmpeer(testbed_factory):
    tb = testbed_factory()
    tb.up(3, launch_args=("--ipalloc-init", "consensus=3"), **TEST)
    hosts = ["h1", "h2", "h3"]
    assert status_line(tb, "h1") == "idle"  # consensus is lazy: nothing asked yet

    # 50 concurrent allocations on each of 3 hosts: 150 distinct addresses of the range.
    got = allocate_concurrently(tb, hosts, 50)
    addrs = [ipaddress.ip_interface(c) for c in got.values()]
    assert len(set(a.ip for a in addrs)) == 150
    assert all(a.ip in RANGE and a.network.prefixlen == 12 for a in addrs)
    for h in hosts:
        assert status_line(tb, h) == "ready"
        assert metric(tb, h, 'weave_ips{state="local-used"}') == 50
        assert owned(tb, h) == {k: [v] for k, v in got.items() if k.startswith(h)}
    assert wait_until(lambda: ring_owners(tb, "h2") == {"h1", "h2", "h3"}, what="every host owns a range")
    assert metric(tb, "h1", "weave_max_ips") == 2 ** 20
    ranges = get(tb, "h1", "/status/ipam").splitlines()
    assert len(ranges) == 3 and ranges[0].startswith("aa:00:00:00:00:01(h1)") and ranges[0].endswith("(50 active)")
    assert all(re.match(r"aa:00:00:00:00:0\d\(h\d\) +\d+ IPs \(\d\d+\.\d% of total\) ", r) for r in ranges), ranges
    shares = [float(re.search(r"\((\d+\.\d)% of total", r).group(1)) for r in ranges]
    assert sum(shares) > 99.5 and min(shares) > 1, f"a donor halves its space once per asker: {ranges}"

    # Asking again gives the same address; a release frees it for the next taker.
    again = http(tb, "h1", ("POST", "/ip/h1-7"), ("GET", "/ip/h1-7"))
    assert again == [(200, got["h1-7"]), (200, got["h1-7"])]
    ip49 = got["h1-49"].split("/")[0]
    assert http(tb, "h1", ("DELETE", f"/ip/h1-49/{ip49}"))[0][0] == 204
    assert http(tb, "h1", ("GET", "/ip/h1-49"))[0][0] == 404
    got["h1-49"] = http(tb, "h1", ("POST", "/ip/h1-49"))[0][1]

    # Bad input: each a clear error, and nothing changes.
    before = owned(tb, "h1")
    ip_h2 = got["h2-0"].split("/")[0]
    errors = http(tb, "h1",
                  ("POST", "/ip/x/192.168.0.0/24"), ("POST", "/ip/x/10.32.0.0/33"), ("POST", "/ip/x/10.32.0.1/24"),
                  ("POST", "/ip/x/10.32.0.0/31"), ("DELETE", "/ip/nosuch"), ("DELETE", f"/ip/h1-0/{ip_h2}"),
                  ("DELETE", "/ip/h1-0/10.32.0.999"), ("GET", "/ip/nosuch"),
                  ("PUT", f"/ip/x/{got['h1-1'].split('/')[0]}/12"), ("DELETE", "/peer/nosuchpeer"))
    expected = [(400, "out of bounds"), (400, "invalid CIDR"), (400, "bits after network prefix"),
                (400, "smaller than minimum size 4"), (400, "Delete: no addresses for nosuch"),
                (400, f"Unable to free: Free: address {ip_h2} not found for h1-0"), (400, "invalid IP address"),
                (404, "no address found for nosuch"), (400, "Unable to claim: address"), (404, "unknown peer")]
    for (code, body), (want_code, want) in zip(errors, expected):
        assert code == want_code and want in body, (code, body, want)
    assert owned(tb, "h1") == before
    assert status_line(tb, "h1") == "ready" and metric(tb, "h1", "weave_ipam_pending_allocates") == 0

    # A restart of the ipam service keeps every allocation (sqlite in the state dir).
    h2_before = owned(tb, "h2")
    tb.weave("h2", "restart", "ipam")
    assert owned(tb, "h2") == h2_before
    assert status_line(tb, "h2") == "ready"
    fresh = http(tb, "h2", ("POST", "/ip/h2-new"))[0]
    assert fresh[0] == 200 and fresh[1] not in got.values()

    # kill -9 h3's whole stack: h1 sees its ranges unreachable, cannot allocate in them ...
    Testbed._kill_namespace_pids(tb.host("h3").ns)
    wait_until(lambda: metric(tb, "h1", "weave_ipam_unreachable_count") == 1, what="h3 unreachable")
    assert any(line.startswith("aa:00:00:00:00:03(h3)") and line.endswith("- unreachable!")
               for line in get(tb, "h1", "/status/ipam").splitlines())
    report = ipam_report(tb, "h1")
    subnet, h3_size = h3_subnet(report), sum(e["Size"] for e in report["Entries"] if e["Nickname"] == "h3")
    stuck = tb.weave("h1", "ipam", "allocate", "in-h3", subnet, "--wait", "2", check=False)
    assert stuck.returncode == 1 and "no answer within 2 s" in stuck.stderr, stuck.stderr
    # ... until `weave rmpeer` hands them to h1; then allocation continues there and on h2.
    out = tb.weave("h1", "rmpeer", "h3").stdout
    assert out == f"{h3_size} IPs taken over from h3\n"
    cidr = tb.weave("h1", "ipam", "allocate", "in-h3", subnet, "--wait", "5").stdout.strip()
    assert ipaddress.ip_interface(cidr).ip in ipaddress.ip_network(subnet)
    wait_until(lambda: ring_owners(tb, "h2") == {"h1", "h2"}, what="h2 learns h3's ranges went to h1")
    assert metric(tb, "h1", "weave_ipam_unreachable_count") == 0
    late = allocate_concurrently(tb, ["h1", "h2"], 5, tag="late-")
    live = {cidr for ident, cidr in got.items() if not ident.startswith("h3-")}  # h3's went with it
    assert len(set(late.values())) == 10 and not set(late.values()) & live


def test_observer_cannot_vote(testbed_factory):
    tb = testbed_factory()
    tb.up(3, launch=False)
    tb.launch(tb.host("h1"), launch_args=("--ipalloc-init", "consensus=2"), **TEST)
    tb.launch(tb.host("h2"), launch_args=("--ipalloc-init", "observer"), **TEST)
    wait_until(lambda: "Peers: 2" in get(tb, "h1", "/status"), what="h1-h2 mesh")
    # One voter and one observer: no quorum of 2, so no ring, however long we wait.
    voter = tb.weave("h1", "prime", "--wait", "3", check=False)
    assert voter.returncode == 1 and "awaiting consensus (quorum: 2, known: 1)" in voter.stderr, voter.stderr
    observer = tb.weave("h2", "prime", "--wait", "1", check=False)
    assert observer.returncode == 1 and "priming" in observer.stderr, observer.stderr
    assert status_line(tb, "h1") == "awaiting consensus (quorum: 2, known: 1)"
    assert ipam_report(tb, "h2")["Entries"] is None
    # A second voter makes the quorum; the ring is split between the voters only.
    tb.launch(tb.host("h3"), launch_args=("--ipalloc-init", "consensus=2"), **TEST)
    assert tb.weave("h2", "prime", "--wait", "30").returncode == 0
    assert ring_owners(tb, "h2") == {"h1", "h3"}
    cidr = tb.weave("h2", "ipam", "allocate", "on-observer", "--wait", "20").stdout.strip()
    assert ipaddress.ip_interface(cidr).ip in RANGE
    assert "h2" in ring_owners(tb, "h2"), "the observer was given space when it asked"
    # Leaving (weave reset's DELETE /peer) hands the observer's ranges to a voter.
    assert http(tb, "h2", ("DELETE", "/peer")) == [(204, "")]
    wait_until(lambda: ring_owners(tb, "h1") == {"h1", "h3"}, what="h1 sees h2's ranges handed over")
    refused = http(tb, "h2", ("POST", "/ip/after-leave"))[0]
    assert refused[0] == 503 and "left" in refused[1]


def test_rings_seeded_differently_do_not_merge(testbed_factory):
    tb = testbed_factory()
    tb.up(2, launch=False)
    for h in ("h1", "h2"):
        tb.launch(tb.host(h), launch_args=("--ipalloc-init", f"seed={tb.host(h).name}"), **TEST)
    wait_until(lambda: "Peers: 2" in get(tb, "h1", "/status"), what="h1-h2 mesh")
    def refused() -> str:
        reason = json.loads(tb.weave("h1", "ipam", "status", "--json").stdout)["refused"]
        return reason if "(h2)" in reason else ""  # named once the topology has given h2's nickname

    reason = wait_until(refused, what="h1 refuses h2's ring")
    assert "IP allocation was seeded by different peers (received: [aa:00:00:00:00:02(h2)], " \
           "ours: [aa:00:00:00:00:01(h1)])" in reason
    for h in ("h1", "h2"):
        assert ring_owners(tb, h) == {h}, "each ring is unchanged"
        assert status_line(tb, h) == "ready"
        assert tb.weave(h, "ipam", "allocate", f"c-{h}", "--wait", "5").returncode == 0
    log = (tb.root / "h1" / "logs" / "ipam.log").read_text()
    assert "refused IPAM" in log and "seeded by different peers" in log
