"""The sleeve overlay between real hosts (testbed namespaces, real kernel devices, UDP on
a real underlay): containers on three hosts reach each other plain and encrypted, a
TCP stream crosses, multicast floods, partial connectivity relays through the middle
host, PMTU discovery copes with a small underlay MTU, garbage datagrams are counted and
dropped, and a restarted datapath (or stack) keeps its containers.

Containers get addresses outside IPAM's range (10.99.<host>.<k>/16), so these tests
do not depend on the ipam service. Every namespace and process is removed by the
testbed fixture (tb.down), also on failure.
"""
from __future__ import annotations

import json
import re
import signal
import subprocess
import time

import pytest
from tests.e2e.procs import wait_until

pytestmark = pytest.mark.e2e

MARKER = "WEAVE-PY-PLAINTEXT-MARKER"
MCAST_GROUP, MCAST_PORT = "239.7.7.7", 5007


# -- helpers ---------------------------------------------------------------------------
def ip_of(k: int, h: int) -> str:
    return f"10.99.{h}.{k}"


def start(tb, hosts: int, *, password=None, containers=1, block=None, mtu=None):
    """Hosts up with weave launched (optionally UDP 6783 blocked between a pair, or a
    small underlay MTU, first), `containers` attached per host, sleeve established."""
    tb.up(hosts, launch=False, password=password)
    if block:
        tb.block(*block, "udp", 6783)
    if mtu:
        for h in tb.hosts:
            tb.exec(h.nickname, ["ip", "link", "set", "eth0", "mtu", str(mtu)], check=True)
    tb.launch_all(profile="test", datapath="sleeve")  # these tests are about the sleeve itself
    for h in tb.hosts:
        for k in range(1, containers + 1):
            tb.add_container(h, k, (f"{ip_of(k, h.index)}/16",))
    return tb


def established(tb, host) -> list[str]:
    out = tb.weave(host, "status", "connections", check=False).stdout
    return [line for line in out.splitlines() if " established " in line]


def wait_fast(tb, host: str) -> None:
    """Between weave-py peers the sleeve carries offloaded superframes: status names it
    fast-sleeve once the peer's offload answer and the fragmentation test are in."""
    wait_until(lambda: all(" fast-sleeve " in line for line in established(tb, host)),
               what=f"{host}: every sleeve connection a fast sleeve")


def wait_mesh(tb, links: int, hosts=None):
    for h in hosts or [h.nickname for h in tb.hosts]:
        wait_until(lambda h=h: len(established(tb, h)) >= links and "mtu=" in "".join(established(tb, h)),
                   what=f"{h}: {links} sleeve connections with an MTU")


def ping(tb, src: str, ip: str, *args: str, count: int = 3) -> subprocess.CompletedProcess:
    return tb.exec(src, ["ping", "-c", str(count), "-i", "0.2", "-W", "2", *args, ip], timeout=30)


def reaches(tb, src: str, ip: str) -> bool:
    """A few attempts: the first frames of a new path wait for ARP and MAC learning."""
    return any(ping(tb, src, ip, count=2).returncode == 0 for _ in range(5))


def metrics(tb, host: str) -> dict[str, float]:
    text = tb.exec(host, ["python3", "-c", "import urllib.request;print(urllib.request.urlopen("
                                           "'http://127.0.0.1:6792/metrics').read().decode())"]).stdout
    out = {}
    for line in text.splitlines():
        m = re.match(r"^(weave_\S+) (\S+)$", line)
        if m:
            out[m.group(1)] = float(m.group(2))
    return out


def iperf(tb, client: str, server: str, server_ip: str, seconds: int = 2) -> float:
    """Gbit/s of one TCP stream client -> server."""
    tb.exec(server, ["iperf3", "-s", "-1", "-D"], check=True)
    time.sleep(0.3)
    out = tb.exec(client, ["iperf3", "-c", server_ip, "-t", str(seconds), "-J"], timeout=seconds + 30)
    assert out.returncode == 0, out.stdout[-500:] + out.stderr
    import json

    return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9


def capture_wire(tb, seconds_after, send) -> bytes:
    """Capture UDP 6783 on host 1's underlay port (in the wire namespace) while `send()`
    runs; the raw pcap bytes."""
    proc = subprocess.Popen(["ip", "netns", "exec", tb.wire, "tcpdump", "--immediate-mode", "-i", "h1", "-w", "-",
                             "udp", "port", "6783"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        while b"listening on" not in proc.stderr.readline():  # it captures from here on
            assert proc.poll() is None, "tcpdump failed to start"
        send()
        time.sleep(seconds_after)
    finally:
        proc.send_signal(signal.SIGINT)
    return proc.communicate(timeout=10)[0]


def send_marker(tb, src: str, dst_ip: str) -> None:
    tb.exec(src, ["python3", "-c", "import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                                   f"for i in range(20):\n s.sendto(b'{MARKER}-%d' % i, ('{dst_ip}', 9))\n"
                                   " time.sleep(0.01)"], check=True)


def multicast_reaches(tb, sender: str, receivers: list[str]) -> dict[str, str]:
    recv = ("import socket,struct,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            "s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n"
            f"s.bind(('',{MCAST_PORT}))\n"
            f"s.setsockopt(socket.IPPROTO_IP,socket.IP_ADD_MEMBERSHIP,struct.pack('4s4s',socket.inet_aton("
            f"'{MCAST_GROUP}'),socket.inet_aton(sys.argv[1])))\n"
            "s.settimeout(15)\nprint(s.recv(100).decode(),flush=True)")
    procs = {}
    for r in receivers:
        h = tb.host(r)
        procs[r] = subprocess.Popen(["ip", "netns", "exec", f"{tb.prefix}-{r}", "python3", "-c", recv,
                                     ip_of(int(r.split("c")[1]), h.index)], stdout=subprocess.PIPE, text=True)
    send = ("import socket,time\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            "s.setsockopt(socket.IPPROTO_IP,socket.IP_MULTICAST_TTL,2)\n"
            f"for i in range(40):\n s.sendto(b'mcast-%d' % i, ('{MCAST_GROUP}', {MCAST_PORT}))\n time.sleep(0.1)")
    time.sleep(0.5)
    tb.exec(sender, ["python3", "-c", send], timeout=30)
    out = {}
    for r, p in procs.items():
        try:
            out[r] = p.communicate(timeout=20)[0].strip()
        finally:
            p.kill()
    return out


def send_garbage(tb, src_host: str, dst_ip: str, sender_name: str) -> None:
    """Datagrams a broken or hostile peer might send to UDP 6783."""
    name = bytes.fromhex(sender_name.replace(":", ""))
    packets = [b"\x01\x02", bytes(6) + b"garbage", name + b"\x00" * 5, name + bytes(40), name + b"\x00\x01" * 30]
    code = ("import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
            f"for p in {packets!r}:\n s.sendto(p, ('{dst_ip}', 6783))")
    tb.exec(src_host, ["python3", "-c", code], check=True)


# -- tests -----------------------------------------------------------------------------
def test_plain_sleeve_three_hosts(testbed_factory):
    tb = start(testbed_factory(), 3)
    wait_mesh(tb, 2)
    wait_fast(tb, "h1")
    for line in established(tb, "h1"):
        assert re.search(r"established fast-sleeve aa:00:00:00:00:0[23]\(h[23]\) mtu=1438$", line), line

    for src in ("h1c1", "h2c1", "h3c1"):
        for h in (1, 2, 3):
            assert reaches(tb, src, ip_of(1, h)), f"{src} -> {ip_of(1, h)}"
    gbps = iperf(tb, "h1c1", "h3c1", ip_of(1, 3))
    assert gbps > 0.05, gbps
    # the TCP superframes went as segment trains (UDP GSO), read whole on h3 (UDP GRO)
    assert metrics(tb, "h1")["weave_sleeve_trains_sent_total"] > 1000
    assert metrics(tb, "h3")['weave_sleeve_trains_total{read="whole"}'] > 1000
    # /report's Router has Weave's datapath fields: h1c1's MAC learnt behind h1, capture counts
    router = json.loads(tb.weave("h3", "report").stdout)["Router"]
    assert list(router)[-5:] == ["OverlayDiagnostics", "TrustedSubnets", "Interface", "CaptureStats", "MACs"]
    mac = tb.weave("h1", "ps", tb.host("h1").ns + "c1").stdout.split()[1]
    assert {m["Mac"]: (m["Name"], m["NickName"]) for m in router["MACs"]}[mac] == ("aa:00:00:00:00:01", "h1")
    assert router["CaptureStats"]["PacketsReceived"] > 0 and router["Interface"] == "vethwe-pcap (via AF_PACKET)"

    # without a password the payload is visible on the underlay (the control for the
    # encrypted test's "no plaintext")
    pcap = capture_wire(tb, 0.5, lambda: send_marker(tb, "h1c1", ip_of(1, 2)))
    assert MARKER.encode() in pcap

    got = multicast_reaches(tb, "h1c1", ["h2c1", "h3c1"])
    assert all(v.startswith("mcast-") for v in got.values()), got

    before = metrics(tb, "h1")
    send_garbage(tb, "h2", "192.168.77.1", "aa:00:00:00:00:02")
    send_garbage(tb, "h3", "192.168.77.1", "aa:00:00:00:00:77")
    after = wait_until(lambda: (m := metrics(tb, "h1")).get('weave_sleeve_dropped_total{reason="unknown_sender"}', 0)
                       > before.get('weave_sleeve_dropped_total{reason="unknown_sender"}', 0) and m,
                       what="garbage counted")
    assert after['weave_sleeve_dropped_total{reason="short_packet"}'] >= 1
    assert after['weave_sleeve_dropped_total{reason="truncated_frame"}'] + \
        after.get('weave_sleeve_dropped_total{reason="trailing_garbage"}', 0) >= 1
    assert after['weave_sleeve_frames_total{direction="forwarded"}'] > 0
    assert reaches(tb, "h1c1", ip_of(1, 2)), "the datapath survived the garbage"

    # a restarted datapath keeps the containers' interfaces and addresses; traffic resumes
    mac_before = tb.exec("h1c1", ["cat", "/sys/class/net/ethwe/address"]).stdout
    old = tb.kill_service("h1", "datapath")
    wait_until(lambda: tb.service_pid("h1", "datapath") not in (0, old), what="datapath restarted")
    assert tb.exec("h1c1", ["cat", "/sys/class/net/ethwe/address"]).stdout == mac_before
    assert f"{ip_of(1, 1)}/16" in tb.exec("h1c1", ["ip", "-4", "-o", "addr"]).stdout
    wait_until(lambda: ping(tb, "h1c1", ip_of(1, 3), count=1).returncode == 0, what="traffic after restart")
    wait_mesh(tb, 2, ["h1"])

    # and so does the whole stack: weave stop leaves the container attached, launch resumes
    tb.weave("h2", "stop")
    assert "ethwe" in tb.exec("h2c1", ["ip", "-o", "link"]).stdout
    tb.launch(tb.host("h2"), profile="test", datapath="sleeve")
    wait_until(lambda: ping(tb, "h2c1", ip_of(1, 1), count=1).returncode == 0, what="traffic after relaunch")
    ps = tb.weave("h2", "ps").stdout.split()
    assert ps[0] == f"{tb.prefix}-h2c1" and ps[2] == f"{ip_of(1, 2)}/16"


def test_encrypted_sleeve_relays_around_a_blocked_pair(testbed_factory):
    # UDP 6783 between h1 and h3 dropped in the wire from the start: their mesh
    # connection never gets a working sleeve, so their traffic goes through h2
    tb = start(testbed_factory(), 3, password="s3cret", block=("h1", "h3"))
    wait_mesh(tb, 1, ["h1", "h3"])
    wait_mesh(tb, 2, ["h2"])
    wait_fast(tb, "h2")
    for line in established(tb, "h2"):
        assert re.search(r"established encrypted\s+fast-sleeve .*encrypted=true.*mtu=1414$", line), line
    assert not any("192.168.77.3" in line for line in established(tb, "h1"))

    for src in ("h1c1", "h2c1", "h3c1"):
        for h in (1, 2, 3):
            assert reaches(tb, src, ip_of(1, h)), f"{src} -> {ip_of(1, h)}"
    assert metrics(tb, "h2")['weave_sleeve_frames_total{direction="relayed"}'] >= 4
    got = multicast_reaches(tb, "h1c1", ["h2c1", "h3c1"])  # h3's copy is re-flooded by h2
    assert all(v.startswith("mcast-") for v in got.values()), got
    gbps = iperf(tb, "h1c1", "h2c1", ip_of(1, 2))
    assert gbps > 0.02, gbps
    assert metrics(tb, "h2")['weave_sleeve_trains_total{read="whole"}'] > 1000  # encrypted trains
    assert iperf(tb, "h3c1", "h1c1", ip_of(1, 1), seconds=1) > 0.01  # relayed, both ways

    pcap = capture_wire(tb, 0.5, lambda: send_marker(tb, "h1c1", ip_of(1, 2)))
    assert b"\xaa\x00\x00\x00\x00\x01" in pcap, "the capture saw h1's sleeve packets"
    assert MARKER.encode() not in pcap and b"PLAINTEXT" not in pcap

    send_garbage(tb, "h2", "192.168.77.1", "aa:00:00:00:00:02")  # h2's name, but not sealed with the key
    wait_until(lambda: metrics(tb, "h1").get('weave_sleeve_dropped_total{reason="decrypt_failed"}', 0) >= 1,
               what="forged packets counted")
    assert reaches(tb, "h1c1", ip_of(1, 2))


def test_small_underlay_mtu(testbed_factory):
    tb = start(testbed_factory(), 2, mtu=1200)
    wait_mesh(tb, 1)
    assert all(line.endswith("mtu=1138") for line in established(tb, "h1")), established(tb, "h1")  # 1200 - 62
    assert reaches(tb, "h1c1", ip_of(1, 2))
    big = ping(tb, "h1c1", ip_of(1, 2), "-M", "dont", "-s", "3000")  # fragmented for the overlay
    assert big.returncode == 0, big.stdout + big.stderr
    df = ping(tb, "h1c1", ip_of(1, 2), "-M", "do", "-s", "2000", count=2)  # answered with frag-needed
    assert df.returncode != 0 and re.search(r"[Ff]rag needed.*mtu = 1138|mtu=1138", df.stdout + df.stderr), \
        df.stdout + df.stderr
    fits = ping(tb, "h1c1", ip_of(1, 2), "-M", "do", "-s", str(1138 - 28), count=2)
    assert fits.returncode == 0, fits.stdout
    assert iperf(tb, "h2c1", "h1c1", ip_of(1, 1), seconds=1) > 0.01
