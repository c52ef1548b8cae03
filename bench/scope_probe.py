"""Scope probe benchmark: what the probe costs a host, idle and loaded, next to a bare
/proc walk measured in the same run, and what its reports weigh.

A 2-host testbed (the real stacks, production timers: spy 1 s, publish 3 s; h2 is there
so the mesh broadcast has a receiver). On h1, two phases of `--seconds` each:
1. idle: the stack and nothing else;
2. load: a container attached to h1 (`weave attach`) running 200 extra processes that
   hold 1,000 sockets: 100 servers each with 5 accepted connections from 100 clients
   with 5 connections each (500 established connections, both ends in the container).
In each phase, side by side:
- probe CPU: utime + stime of h1's scope-probe process over the phase (ms per second);
- bare /proc walk: a process started in h1's namespace for the phase that does once a
  second what any /proc-based probe must at least do (list /proc, read every pid's
  stat), measured the same way; ratio = probe / bare walk;
- report sizes (gzipped msgpack: what goes on the bus, the mesh and to Scope apps):
  full and delta, read from the reports the probe publishes on h1's bus;
- mesh bytes per second (the probe's own count: each broadcast payload times the peers
  it reaches) and the processes and endpoints in a full report.
This machine is shared: only the ratio compares across runs.

    .venv/bin/python -m bench.scope_probe [--seconds 30] [--json]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from weavectl.testbed import Testbed

BARE_WALK = """
import os, sys, time
end = time.monotonic() + float(sys.argv[1])
t0 = os.times()
while time.monotonic() < end:
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
                os.read(fd, 4096)
                os.close(fd)
            except OSError:
                pass
    time.sleep(1.0)
t = os.times()
print(t.user + t.system - t0.user - t0.system)  # the walks only, not the interpreter's start
"""

LOAD = """
import ctypes, os, signal, socket, sys, time
PAIRS, CONNS = 100, 5
die_with_parent = lambda: ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
ready_r, ready_w = os.pipe()
pids = []
for i in range(PAIRS):
    srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(CONNS)
    port = srv.getsockname()[1]
    pid = os.fork()
    if pid == 0:  # a server: accept its clients' connections, hold them
        die_with_parent()
        held = [srv.accept()[0] for _ in range(CONNS)]
        signal.pause()
    pids.append(pid)
    pid = os.fork()
    if pid == 0:  # a client: 5 connections to its server, held
        die_with_parent()
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(CONNS)]
        os.write(ready_w, b"x")
        signal.pause()
    pids.append(pid)
    srv.close()
got = 0
while got < PAIRS:
    got += len(os.read(ready_r, PAIRS))
print(len(pids), flush=True)
signal.pause()
"""

REPORTS = """
import asyncio, sys
from pathlib import Path
from shared import subjects
from shared.config import LaunchConfig
from shared.nats_bus import NatsBus
from shared.schemas.scope import REPORT_TOPIC, ProbeReport
from services.scope.codec import decode_report

async def main(state_dir, seconds):
    launch = LaunchConfig.load(Path(state_dir))
    bus = await NatsBus.connect(launch.bus_url, launch.bus_token(), "bench")
    got = []
    async def on(msg):
        got.append(ProbeReport.model_validate_json(msg.data))
    await bus.subscribe(subjects.event(REPORT_TOPIC), on)
    await asyncio.sleep(seconds)
    await bus.close()
    out = {"full": [], "delta": [], "processes": 0, "endpoints": 0}
    for r in got:
        out["full" if r.full else "delta"].append(len(r.body))
        if r.full:
            rep = decode_report(r.body, "application/msgpack", "gzip")
            out["processes"], out["endpoints"] = len(rep.process.nodes), len(rep.endpoint.nodes)
    print(__import__("json").dumps(out))

asyncio.run(main(sys.argv[1], float(sys.argv[2])))
"""


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def mesh_rate(tb: Testbed) -> float:
    text = tb.exec("h1", ["curl", "-sf", "http://127.0.0.1:6793/metrics"]).stdout
    for line in text.splitlines():
        if line.startswith("scope_probe_mesh_bytes_per_second "):
            return float(line.split()[1])
    return -1.0


def phase(tb: Testbed, seconds: float) -> dict:
    """Probe CPU, bare walk CPU, report sizes over one phase on h1."""
    probe = tb.service_pid("h1", "scope-probe")
    h1 = tb.host("h1")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    ns = ["ip", "netns", "exec", h1.ns]
    walk = subprocess.Popen([*ns, sys.executable, "-c", BARE_WALK, str(seconds)], stdout=subprocess.PIPE, text=True)
    reports = subprocess.Popen([*ns, sys.executable, "-c", REPORTS, h1.state_dir, str(seconds)],
                               stdout=subprocess.PIPE, text=True, env=env)
    before, started = cpu_s(probe), time.monotonic()
    walk_cpu = float(walk.communicate(timeout=seconds + 30)[0])
    elapsed = time.monotonic() - started
    probe_cpu = cpu_s(probe) - before
    sizes = json.loads(reports.communicate(timeout=seconds + 30)[0])
    return {"probe_ms_per_s": probe_cpu * 1000 / elapsed, "walk_ms_per_s": walk_cpu * 1000 / elapsed,
            "ratio": probe_cpu / walk_cpu if walk_cpu else float("inf"), "full_bytes": _mean(sizes["full"]),
            "delta_bytes": _mean(sizes["delta"]), "reports": len(sizes["full"]) + len(sizes["delta"]),
            "processes": sizes["processes"], "endpoints": sizes["endpoints"], "mesh_bytes_per_s": mesh_rate(tb)}


def _mean(values: list[int]) -> float:
    return sum(values) / len(values) if values else 0.0


def start_load(tb: Testbed) -> subprocess.Popen:
    """200 processes holding 1,000 sockets in a container attached to h1."""
    h1 = tb.host("h1")
    ns = f"{h1.ns}c1"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
    h1.containers.append(ns)
    tb.weave(h1, "attach", "--name", "load.weave.local", ns)
    load = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", LOAD], stdout=subprocess.PIPE, text=True)
    assert int(load.stdout.readline()) == 200
    return load


def main() -> None:
    parser = argparse.ArgumentParser(prog="bench.scope_probe")
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each phase")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        tb = Testbed(Path(root), prefix="wbsp")
        try:
            tb.up(2)
            time.sleep(5.0)  # past the first full report and the start-up reads
            idle = phase(tb, args.seconds)
            load = start_load(tb)
            time.sleep(6.0)  # the container and its sockets known, argv cached
            loaded = phase(tb, args.seconds)
            load.kill()
            load.wait()
        finally:
            tb.down()
    if args.json:
        print(json.dumps({"idle": idle, "load": loaded}, indent=1))
        return
    rows = [("probe CPU (ms per s)", "probe_ms_per_s", "{:.1f}"), ("bare /proc walk CPU (ms per s)", "walk_ms_per_s",
            "{:.1f}"), ("ratio probe / bare walk", "ratio", "{:.1f}x"),
            ("full report, gzipped (bytes)", "full_bytes", "{:.0f}"),
            ("delta report, gzipped (bytes)", "delta_bytes", "{:.0f}"),
            ("mesh bytes per s (payload x peers)", "mesh_bytes_per_s", "{:.0f}"),
            ("processes in a full report", "processes", "{}"), ("endpoints in a full report", "endpoints", "{}"),
            ("reports seen", "reports", "{}")]
    print(f"{'':38} {'idle':>12} {'200 procs, 1000 sockets':>24}")
    for label, key, fmt in rows:
        print(f"{label:38} {fmt.format(idle[key]):>12} {fmt.format(loaded[key]):>24}")


if __name__ == "__main__":
    main()
