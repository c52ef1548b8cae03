"""weaveDNS end to end on the testbed: real stacks in host namespaces, real DNS packets
(`dig` inside the namespaces), the real CLI. Names registered on one host resolve on
the others; a name on two hosts answers both; removal, `weave attach --name`, restarts of
the dns service and of a whole stack; forwarding to an upstream resolver the test runs
in a namespace of its own; malformed packets."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import pytest

from weavectl.testbed import Testbed
from tests.e2e.procs import wait_until

UPSTREAM_ADDR = "192.168.77.99"
# A small upstream resolver (dnslib), run inside a namespace on the testbed's underlay.
RESPONDER = f"""
import sys, time
from dnslib import QTYPE, RCODE, RR, A
from dnslib.server import BaseResolver, DNSServer
class R(BaseResolver):
    def resolve(self, request, handler):
        reply = request.reply()
        if str(request.q.qname) == "ext.example.com.":
            reply.add_answer(RR("ext.example.com.", QTYPE.A, rdata=A("203.0.113.7"), ttl=30))
        else:
            reply.header.rcode = RCODE.NXDOMAIN
        return reply
for tcp in (False, True):
    DNSServer(R(), address="{UPSTREAM_ADDR}", port=53, tcp=tcp).start_thread()
print("ready", flush=True)
while True:
    time.sleep(3600)
"""
GARBAGE = """
import socket, struct
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
def ask(payload):
    s.sendto(payload, ("127.0.0.1", 53))
    try:
        return s.recv(4096).hex()
    except socket.timeout:
        return "none"
print(ask(b"\\x00\\x01\\x00"))
print(ask(struct.pack("!HHHHHH", 0xBEEF, 0x0100, 1, 0, 0, 0) + b"\\x05ab"))
"""




def dig(tb: Testbed, host: str, name: str, *opts: str) -> tuple[str, list[str]]:
    """(status, sorted A addresses) of a real query to the host's weaveDNS."""
    out = tb.exec(host, ["dig", "@127.0.0.1", "+time=2", "+tries=1", *opts, name]).stdout
    m = re.search(r"status: (\w+)", out)
    addrs = sorted(line.split()[-1] for line in out.splitlines()
                   if not line.startswith(";") and "\tIN\tA\t" in line.replace(" ", "\t"))
    return (m.group(1) if m else "NO-REPLY"), addrs


def resolves(tb, host, name, addrs, *opts):
    return lambda: dig(tb, host, name, *opts) == ("NOERROR", sorted(addrs))


def nxdomain(tb, host, name):
    return lambda: dig(tb, host, name)[0] == "NXDOMAIN"


@pytest.fixture
def resolv_conf(tmp_path, monkeypatch):
    path = tmp_path / "resolv.conf"
    path.write_text("# no upstream yet\n")
    monkeypatch.setenv("WEAVE_DNS_RESOLV_CONF", str(path))  # inherited by every host's stack
    return path


def underlay_namespace(tb: Testbed, name: str, addr: str) -> str:
    """A namespace named with the testbed's prefix (so `down` removes it, and every
    process in it), on the underlay at `addr`."""
    ns = f"{tb.prefix}-{name}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    wire, port = ["ip", "-n", tb.wire, "link"], f"x-{name}"
    subprocess.run([*wire, "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns], check=True)
    subprocess.run([*wire, "set", port, "master", "br0", "up"], check=True)
    subprocess.run(["ip", "-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0"], check=True)
    subprocess.run(["ip", "-n", ns, "link", "set", "eth0", "up"], check=True)
    return ns


def start_upstream(tb: Testbed) -> subprocess.Popen:
    ns = underlay_namespace(tb, "up", UPSTREAM_ADDR)
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", RESPONDER], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    return proc


def test_names_across_hosts_upstream_and_malformed_packets(testbed_factory, resolv_conf):
    tb = testbed_factory()
    tb.up(3, profile="test")
    upstream = start_upstream(tb)
    try:
        # a name added on h1 resolves on h2 and h3; the same name on h2 answers both
        tb.weave("h1", "dns-add", "10.32.0.5", "-h", "web.weave.local")
        for h in ("h2", "h3"):
            wait_until(resolves(tb, h, "web.weave.local", ["10.32.0.5"]), what=f"web on {h}")
        tb.weave("h2", "dns-add", "10.40.0.1", "-h", "web.weave.local")
        wait_until(resolves(tb, "h3", "web.weave.local", ["10.32.0.5", "10.40.0.1"]), what="both addresses")
        assert dig(tb, "h3", "web.weave.local", "+tcp") == ("NOERROR", ["10.32.0.5", "10.40.0.1"])
        assert dig(tb, "h1", "WEB") == ("NOERROR", ["10.32.0.5", "10.40.0.1"]), "unqualified, any case"
        assert tb.weave("h3", "dns-lookup", "web").stdout.split() in (["10.32.0.5", "10.40.0.1"],
                                                                       ["10.40.0.1", "10.32.0.5"])
        assert tb.weave("h3", "status", "dns").stdout == (
            "web          10.32.0.5       weave:extern aa:00:00:00:00:01\n"
            "web          10.40.0.1       weave:extern aa:00:00:00:00:02\n")
        status = tb.weave("h3", "status").stdout
        assert "        Service: dns\n         Domain: weave.local.\n       Upstream: none\n" \
               "            TTL: 1\n        Entries: 2\n" in status
        report = json.loads(tb.weave("h3", "report").stdout)["DNS"]
        assert [(e["Hostname"], e["Origin"]) for e in report["Entries"]] == [
            ("web.weave.local.", "aa:00:00:00:00:01"), ("web.weave.local.", "aa:00:00:00:00:02")]
        metrics = tb.exec("h1", [sys.executable, "-c", "import urllib.request;print(urllib.request.urlopen("
                                                     "'http://127.0.0.1:6791/metrics').read().decode())"]).stdout
        assert "weave_dns_entries 1.0" in metrics

        # removal propagates
        tb.weave("h1", "dns-remove", "10.32.0.5", "-h", "web.weave.local")
        for h in ("h1", "h2", "h3"):
            wait_until(resolves(tb, h, "web.weave.local", ["10.40.0.1"]), what=f"removal on {h}")

        # bad input fails with one line that says why
        for args, words in ((["fe80::1", "-h", "x.weave.local"], "IPv6 address"),
                            (["10.0.0.1", "-h", "a" * 64 + ".weave.local"], "over 63 bytes"),
                            (["10.0.0.1", "-h", "bad_.-x.weave.local"], "invalid label"),
                            (["10.0.0.1", "-h", ("b" * 60 + ".") * 5 + "weave.local"], "the limit is 255")):
            out = tb.weave("h1", "dns-add", *args, check=False)
            assert out.returncode == 1 and words in out.stderr and len(out.stderr.splitlines()) == 1, out.stderr

        # `weave attach --name` registers the container's name (the datapath's event); detach removes it
        box = f"{tb.prefix}-box"
        subprocess.run(["ip", "netns", "add", box], check=True)
        tb.weave("h1", "attach", "10.32.1.7/12", box, "--name", "box.weave.local")
        wait_until(resolves(tb, "h2", "box.weave.local", ["10.32.1.7"]), what="box registered")
        tb.weave("h1", "detach", box)
        wait_until(nxdomain(tb, "h2", "box.weave.local"), what="box tombstoned")

        # names we do not own go upstream; none configured -> SERVFAIL; resolv.conf re-read on change
        assert dig(tb, "h2", "ext.example.com")[0] == "SERVFAIL"
        resolv_conf.write_text(f"nameserver {UPSTREAM_ADDR}\n")
        wait_until(resolves(tb, "h2", "ext.example.com", ["203.0.113.7"]), timeout=15, what="forwarded")
        assert dig(tb, "h2", "ext.example.com", "+tcp") == ("NOERROR", ["203.0.113.7"])
        assert dig(tb, "h2", "nope.example.com")[0] == "NXDOMAIN"
        assert f"Upstream: {UPSTREAM_ADDR}\n" in tb.weave("h2", "status").stdout

        # garbage: no header -> nothing; a header with a broken question -> FORMERR; still serving
        dropped, formerr = tb.exec("h3", [sys.executable, "-c", GARBAGE]).stdout.split()
        assert dropped == "none"
        assert formerr[:4] == "beef" and int(formerr[4:8], 16) & 0x800F == 0x8001
        assert dig(tb, "h3", "web.weave.local") == ("NOERROR", ["10.40.0.1"])
    finally:
        upstream.kill()
        upstream.wait()


def test_dns_restart_and_stale_entries_after_a_stack_restart(testbed_factory, resolv_conf):
    tb = testbed_factory()
    tb.up(3, profile="test")
    tb.weave("h1", "dns-add", "10.32.0.1", "-h", "stale.weave.local")
    tb.weave("h2", "dns-add", "10.32.0.2", "-h", "keep.weave.local")
    for h in ("h1", "h2", "h3"):
        wait_until(resolves(tb, h, "keep.weave.local", ["10.32.0.2"]), what=f"keep on {h}")
        wait_until(resolves(tb, h, "stale.weave.local", ["10.32.0.1"]), what=f"stale on {h}")

    # a restart of h2's dns service: its own and its peers' names are back at once
    old = tb.service_pid("h2", "dns")
    tb.weave("h2", "restart", "dns")
    assert tb.service_pid("h2", "dns") not in (0, old)
    assert dig(tb, "h2", "keep.weave.local") == ("NOERROR", ["10.32.0.2"])
    assert dig(tb, "h2", "stale.weave.local") == ("NOERROR", ["10.32.0.1"])
    time.sleep(6)  # more than a gossip round (5 s in the test profile): nothing contradicts h2's names
    for h in ("h1", "h3"):
        assert dig(tb, h, "keep.weave.local") == ("NOERROR", ["10.32.0.2"])

    # h1's whole stack restarts: its old name is gone everywhere and stays gone
    tb.weave("h1", "stop")
    tb.launch(tb.host("h1"), profile="test")
    wait_until(resolves(tb, "h1", "keep.weave.local", ["10.32.0.2"]), what="h1 relearns h2's names")
    time.sleep(6)
    for h in ("h1", "h2", "h3"):
        assert dig(tb, h, "stale.weave.local")[0] == "NXDOMAIN", h
    log = (tb.root / "h1" / "logs" / "dns.log").read_text()
    restored = re.findall(r"restored (\d+) entries \((\d+) snapshot", log)[-1]
    assert restored[0] == "0" and int(restored[1]) > 0, f"the new run took its old names back: {restored}"
