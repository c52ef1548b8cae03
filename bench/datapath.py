"""Datapath benchmark: TCP throughput (iperf3, one stream), CPU per Gbit/s and ping RTT
container to container across two hosts over weave-py's fast sleeve (the sleeve between
weave-py peers, offloaded superframes), plain and encrypted, and over its fastpath
(kernel VXLAN on UDP 6784, `--datapath fastpath`), next to a raw veth pair and plain
kernel VXLAN between the same kind of namespaces, all measured in this run (the machine
is shared: compare ratios, reference/baseline.md). Also the capture ceiling of the two
ways to read the bridge (AF_PACKET on vethwe-pcap, as the datapath does, vs a TAP
port), in frames/s read by one Python loop.

The reference, "kernel VXLAN", runs over the same underlay as the testbed's hosts (a
bridge in a wire namespace between their veths); "kernel VXLAN, direct veth" has the
two hosts' veths joined back to back; "kernel VXLAN + weaver's iptables" has, in both
hosts, the rules a weave-py host keeps without npc (Weave's own: nat WEAVE, FORWARD
accepts, one with conntrack; services/datapath/host_iptables.py). Any such rule makes
every bridged frame pass conntrack (bridge-nf-call-iptables), so the fastpath's own
cost is its ratio to that row; its ratio to the bare row adds the host firewall's. The
fastpath runs once launched with `--no-npc` (weaver's rules and the VXLAN source
filter) and once with the NetworkPolicy controller (its chains, the same conntrack).

CPU is the whole machine's busy time during the iperf3 run (both ends, the kernel, and
for the sleeve the two datapath processes), in cores per Gbit/s moved.

    .venv/bin/python -m bench.datapath [--seconds 5] [--runs 1] [--json]

Needs root (network namespaces) and iperf3. Every namespace it makes starts with
`wbd<hex>-` (its own) or the testbed prefix `wbs<hex>` and is removed at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from services.datapath.host_iptables import HostIptables, rules
from shared.netfilter_tools import Backend, run_command
from weavectl.testbed import Testbed

TARGET_PLAIN, TARGET_ENCRYPTED, TARGET_FASTPATH = 0.40, 0.20, 0.95  # issue 7 (fast sleeve, fastpath)
GO_SLEEVE = {"plain": 0.036, "encrypted": 0.017}  # Weave Net 2.8's Go sleeve, baseline.md


def sh(*argv: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.strip()}")
    return proc


def nsx(ns: str, *argv: str, **kw) -> subprocess.CompletedProcess:
    return sh("ip", "netns", "exec", ns, *argv, **kw)


# -- measurements between two namespaces --------------------------------------------------
def busy_seconds() -> float:
    """CPU time the whole machine spent busy (all cores), from /proc/stat."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def iperf_gbps(client: str, server: str, server_ip: str, seconds: int) -> tuple[float, float]:
    """(Gbit/s, cores per Gbit/s) of one iperf3 run; CPU sampled over the client's run."""
    nsx(server, "iperf3", "-s", "-1", "-D")
    time.sleep(0.3)
    busy, start = busy_seconds(), time.monotonic()
    out = nsx(client, "iperf3", "-c", server_ip, "-t", str(seconds), "-J", timeout=seconds + 60)
    cores = (busy_seconds() - busy) / (time.monotonic() - start)
    gbps = json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 1e9
    return gbps, cores / max(gbps, 1e-9)


def ping_ms(client: str, ip: str) -> float:
    out = nsx(client, "ping", "-c", "30", "-i", "0.02", "-q", ip).stdout
    return float(re.search(r"= [\d.]+/([\d.]+)/", out).group(1))


def measure(client: str, server: str, server_ip: str, seconds: int, runs: int) -> dict:
    nsx(client, "ping", "-c", "3", "-i", "0.2", "-W", "2", server_ip, check=False)  # ARP, MAC learning
    samples = sorted(iperf_gbps(client, server, server_ip, seconds) for _ in range(runs))
    gbps, cpu = samples[len(samples) // 2]
    return {"gbps": round(gbps, 3), "cpu_per_gbps": round(cpu, 4), "rtt_ms": round(ping_ms(client, server_ip), 3)}


# -- reference paths ------------------------------------------------------------------------
class Scratch:
    def __init__(self) -> None:
        self.prefix = f"wbd{secrets.token_hex(2)}"
        self.made: list[str] = []

    def ns(self, role: str) -> str:
        name = f"{self.prefix}-{role}"
        sh("ip", "netns", "add", name)
        self.made.append(name)
        sh("ip", "-n", name, "link", "set", "lo", "up")
        return name

    def cleanup(self) -> None:
        for name in self.made:
            for pid in sh("ip", "netns", "pids", name, check=False).stdout.split():
                sh("kill", "-9", pid, check=False)
            sh("ip", "netns", "del", name, check=False)


def veth_pair(s: Scratch, seconds: int, runs: int) -> dict:
    a, b = s.ns("va"), s.ns("vb")
    sh("ip", "-n", a, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", b)
    for ns, ip in ((a, "10.201.0.1"), (b, "10.201.0.2")):
        sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
    return measure(a, b, "10.201.0.2", seconds, runs)


def weaver_firewall(ns: str, bridge: str) -> None:
    """The iptables a weave-py host has without npc, applied in `ns` by the datapath's
    own code (services/datapath/host_iptables.py): nat WEAVE + POSTROUTING jump,
    Weave's FORWARD rules (one uses conntrack)."""
    def in_ns(argv, stdin):
        return run_command(["ip", "netns", "exec", ns, *argv], stdin)
    HostIptables(Backend.NFT, in_ns).apply(rules((), npc=False, bridge=bridge))


def kernel_vxlan(s: Scratch, seconds: int, runs: int, wire: bool = True, firewall: bool = False) -> dict:
    """container -> bridge -> vxlan -> veth underlay -> vxlan -> bridge -> container; the
    underlay through a bridge in a wire namespace as the testbed's (`wire`), or one veth;
    `firewall`: with weaver's iptables in both hosts (weaver_firewall)."""
    tag = ("w" if wire else "d") + ("f" if firewall else "")
    h = [s.ns(f"x{tag}h1"), s.ns(f"x{tag}h2")]
    c = [s.ns(f"x{tag}c1"), s.ns(f"x{tag}c2")]
    if wire:
        w = s.ns(f"x{tag}wire")
        sh("ip", "-n", w, "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", w, "link", "set", "br0", "up")
        for i in (0, 1):
            sh("ip", "-n", w, "link", "add", f"h{i}", "type", "veth", "peer", "name", "u", "netns", h[i])
            sh("ip", "-n", w, "link", "set", f"h{i}", "master", "br0", "up")
    else:
        sh("ip", "-n", h[0], "link", "add", "u", "type", "veth", "peer", "name", "u", "netns", h[1])
    for i in (0, 1):
        me, other = f"192.168.78.{i + 1}", f"192.168.78.{2 - i}"
        sh("ip", "-n", h[i], "addr", "add", f"{me}/24", "dev", "u")
        sh("ip", "-n", h[i], "link", "set", "u", "up")
        sh("ip", "-n", h[i], "link", "add", "br0", "type", "bridge")
        sh("ip", "-n", h[i], "link", "add", "vx0", "type", "vxlan", "id", "42", "dstport", "4789", "remote", other,
           "local", me, "dev", "u")
        sh("ip", "-n", h[i], "link", "add", "vc", "type", "veth", "peer", "name", "eth0", "netns", c[i])
        for dev in ("vx0", "vc"):
            sh("ip", "-n", h[i], "link", "set", dev, "master", "br0", "up")
        sh("ip", "-n", h[i], "link", "set", "br0", "up")
        sh("ip", "-n", c[i], "link", "set", "eth0", "mtu", "1450")
        sh("ip", "-n", c[i], "addr", "add", f"10.200.0.{i + 1}/24", "dev", "eth0")
        sh("ip", "-n", c[i], "link", "set", "eth0", "up")
        if firewall:
            weaver_firewall(h[i], "br0")
    return measure(c[0], c[1], "10.200.0.2", seconds, runs)


# -- weave-py sleeve --------------------------------------------------------------------------
def sleeve(password: str | None, seconds: int, runs: int, datapath: str = "sleeve", npc: bool = True) -> dict:
    """Over the sleeve, or (datapath="fastpath") the fastpath, whose status line names
    the overlay weave-py-vxlan; `npc`: with the NetworkPolicy controller (else --no-npc)."""
    want = "weave-py-vxlan" if datapath == "fastpath" else "mtu="
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as root:
        tb = Testbed(Path(root), f"wbs{secrets.token_hex(2)}")
        try:
            tb.up(2, password=password, launch=False)
            tb.launch_all(datapath=datapath, launch_args=() if npc else ("--no-npc",))
            for h in tb.hosts:
                tb.add_container(h, 1, (f"10.99.{h.index}.1/16",))
            deadline = time.monotonic() + 30
            while not all(x in tb.weave("h1", "status", "connections", check=False).stdout for x in (want, "mtu=")):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the {datapath} overlay did not establish within 30 s")
                time.sleep(0.2)
            status = tb.weave("h1", "status", "connections").stdout.strip()
            out = measure(f"{tb.prefix}-h1c1", f"{tb.prefix}-h2c1", "10.99.2.1", seconds, runs)
            out["mtu"] = int(re.search(r"mtu=(\d+)", status).group(1))
            return out
        finally:
            tb.down()


# -- capture ceiling: AF_PACKET vs TAP ------------------------------------------------------------
READER = r"""
import os, sys, time, select, subprocess
sys.path.insert(0, sys.argv[3])
from services.datapath.capture import PacketPort, TapPort, FRAME_BUFFER
kind, seconds = sys.argv[1], float(sys.argv[2])
port = PacketPort("vethwe-pcap") if kind == "packet" else TapPort("tapwe")
if kind == "tap":
    subprocess.run(["ip", "link", "set", "tapwe", "master", "weave", "up"], check=True)
print("ready", flush=True)
buf = bytearray(FRAME_BUFFER); n = 0; start = None
poll = select.poll(); poll.register(port.fileno(), select.POLLIN)
end = time.monotonic() + seconds + 10
while time.monotonic() < end:  # the clock starts at the first flood frame (ARP/ND do not count)
    if not poll.poll(1000):
        if start: break
        continue
    for _ in range(64):
        try:
            size = port.recv_into(buf)
        except BlockingIOError:
            break
        if start is None and size > 1000:
            start = time.monotonic(); end = start + seconds
        n += start is not None
print(n / max(time.monotonic() - start, 1e-9) if start else 0.0)
"""


def capture_rate(s: Scratch, kind: str, seconds: int) -> float:
    """Frames/s one Python loop reads while a container sends 1400-byte UDP frames as
    fast as iperf3 can to another on the same bridge, which learns no MACs (ageing 0)
    and so floods every frame to the capture port too."""
    host, c = s.ns(f"k{kind}"), s.ns(f"k{kind}c")
    sh("ip", "-n", host, "link", "add", "weave", "type", "bridge")
    sh("ip", "-n", host, "link", "set", "weave", "type", "bridge", "ageing_time", "0")  # flood everything
    sh("ip", "-n", host, "link", "set", "weave", "up")
    if kind == "packet":
        sh("ip", "-n", host, "link", "add", "vethwe-bridge", "type", "veth", "peer", "name", "vethwe-pcap")
        sh("ip", "-n", host, "link", "set", "vethwe-bridge", "master", "weave", "up")
        sh("ip", "-n", host, "link", "set", "vethwe-pcap", "up")
    server = s.ns(f"k{kind}s")
    for i, ns in enumerate((c, server), 1):
        sh("ip", "-n", host, "link", "add", f"vc{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "-n", host, "link", "set", f"vc{i}", "master", "weave", "up")
        sh("ip", "-n", ns, "addr", "add", f"10.202.0.{i}/24", "dev", "eth0")
        sh("ip", "-n", ns, "link", "set", "eth0", "up")
    reader = subprocess.Popen(["ip", "netns", "exec", host, sys.executable, "-c", READER, kind, str(seconds),
                               str(Path(__file__).resolve().parent.parent)], stdout=subprocess.PIPE, text=True)
    assert reader.stdout.readline().strip() == "ready"
    nsx(server, "iperf3", "-s", "-D")
    for _ in range(20):  # until the server listens
        if nsx(c, "iperf3", "-c", "10.202.0.2", "-u", "-b", "0", "-l", "1400", "-t", str(seconds + 1),
               check=False, timeout=seconds + 30).returncode == 0:
            break
        time.sleep(0.2)
    out, _ = reader.communicate(timeout=seconds + 30)
    return float(out.strip().splitlines()[-1])


def run(seconds: int, runs: int) -> dict:
    s = Scratch()
    try:
        results = {"veth": veth_pair(s, seconds, runs), "kernel_vxlan": kernel_vxlan(s, seconds, runs),
                   "kernel_vxlan_direct": kernel_vxlan(s, seconds, runs, wire=False),
                   "kernel_vxlan_firewall": kernel_vxlan(s, seconds, runs, firewall=True)}
        results["capture_frames_per_s"] = {k: round(capture_rate(s, k, 2)) for k in ("packet", "tap")}
    finally:
        s.cleanup()
    results["sleeve_plain"] = sleeve(None, seconds, runs)
    results["sleeve_encrypted"] = sleeve("bench-password", seconds, runs)
    results["fastpath"] = sleeve(None, seconds, runs, datapath="fastpath", npc=False)
    results["fastpath_npc"] = sleeve(None, seconds, runs, datapath="fastpath")
    vx = results["kernel_vxlan"]["gbps"]
    results["ratios_to_kernel_vxlan"] = {
        "plain": round(results["sleeve_plain"]["gbps"] / vx, 4),
        "encrypted": round(results["sleeve_encrypted"]["gbps"] / vx, 4),
        "fastpath": round(results["fastpath"]["gbps"] / vx, 4),
        "fastpath_npc": round(results["fastpath_npc"]["gbps"] / vx, 4),
        "fastpath_same_firewall": round(results["fastpath"]["gbps"] / results["kernel_vxlan_firewall"]["gbps"], 4)}
    results["targets"] = {"plain": TARGET_PLAIN, "encrypted": TARGET_ENCRYPTED, "fastpath": TARGET_FASTPATH}
    results["go_sleeve_ratios"] = GO_SLEEVE
    results["seconds"], results["runs"] = seconds, runs
    return results


def report(r: dict) -> str:
    rows = [f"{'path':<34} {'Gbit/s':>8} {'cores/Gbit/s':>12} {'RTT ms':>8} {'vs VXLAN':>9}"]
    vx = r["kernel_vxlan"]["gbps"]
    for key, label in (("veth", "veth pair"), ("kernel_vxlan", "kernel VXLAN (reference)"),
                       ("kernel_vxlan_direct", "kernel VXLAN, direct veth"),
                       ("kernel_vxlan_firewall", "kernel VXLAN + weaver's iptables"),
                       ("sleeve_plain", "weave-py fast sleeve"), ("sleeve_encrypted", "weave-py fast sleeve + NaCl"),
                       ("fastpath", "weave-py fastpath (--no-npc)"), ("fastpath_npc", "weave-py fastpath + npc")):
        m = r[key]
        rows.append(f"{label:<34} {m['gbps']:>8.3f} {m['cpu_per_gbps']:>12.4f} {m['rtt_ms']:>8.3f} "
                    f"{m['gbps'] / vx:>9.3f}")
    ratios = r["ratios_to_kernel_vxlan"]
    rows.append(f"targets: plain >= {TARGET_PLAIN} ({'met' if ratios['plain'] >= TARGET_PLAIN else 'MISSED'}), "
                f"encrypted >= {TARGET_ENCRYPTED} ({'met' if ratios['encrypted'] >= TARGET_ENCRYPTED else 'MISSED'}); "
                f"Weave Net's Go sleeve: {GO_SLEEVE['plain']} / {GO_SLEEVE['encrypted']}; "
                f"fastpath >= {TARGET_FASTPATH}: vs bare kernel VXLAN {ratios['fastpath']} "
                f"({'met' if ratios['fastpath'] >= TARGET_FASTPATH else 'MISSED'}), vs kernel VXLAN under the same "
                f"host iptables {ratios['fastpath_same_firewall']} "
                f"({'met' if ratios['fastpath_same_firewall'] >= TARGET_FASTPATH else 'MISSED'}); "
                f"with npc {ratios['fastpath_npc']}")
    cap = r["capture_frames_per_s"]
    rows.append(f"capture ceiling, 1400-byte frames read by one Python loop: AF_PACKET {cap['packet']:,}/s, "
                f"TAP {cap['tap']:,}/s")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="iperf3 duration per measurement")
    parser.add_argument("--runs", type=int, default=1, help="iperf3 runs per path (median)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if os.geteuid() != 0:
        sys.exit("bench.datapath needs root (network namespaces)")
    results = run(args.seconds, args.runs)
    print(json.dumps(results) if args.json else report(results))


if __name__ == "__main__":
    main()
