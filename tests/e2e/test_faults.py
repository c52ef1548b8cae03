"""Fault injection on three hosts (issue 19): while every host allocates addresses, names
them in weaveDNS and applies NetworkPolicies on its own bus (tests/e2e/fault_worker.py),
a fault every 3 s for FAULT_S seconds: SIGKILL of a random service of a random host, or
a 4 s cut of a host's underlay link. After healing, what was acknowledged holds: every
acknowledged address is unique and still allocated to its container, every acknowledged
name resolves on every host (real DNS queries), every acknowledged policy is enforced on
every host, and every service runs. The counts are printed."""
from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from pathlib import Path

from weavectl.testbed import Testbed
from tests.e2e.procs import wait_until

FAULT_S = 36.0
EVERY_S = 3.0
CUT_S = 4.0
SERVICES = ("gossip", "ipam", "dns", "datapath", "npc")
REPO = Path(__file__).resolve().parents[2]


def worker(tb: Testbed, host: str, *args: str) -> list[str]:
    h = tb.host(host)
    return ["ip", "netns", "exec", h.ns, sys.executable, "-m", "tests.e2e.fault_worker", *args,
            "--state-dir", h.state_dir, "--host", host]


def inject(tb: Testbed, rng: random.Random, log: list[str]) -> None:
    """Faults every EVERY_S until FAULT_S is over; every cut is restored."""
    cut_until: dict[str, float] = {}
    end = time.monotonic() + FAULT_S
    while time.monotonic() < end:
        now = time.monotonic()
        for host, until in list(cut_until.items()):
            if now >= until:
                tb.restore(host)
                del cut_until[host]
        host = f"h{rng.randint(1, 3)}"
        if rng.random() < 0.25 and host not in cut_until and not cut_until:
            tb.cut(host)
            cut_until[host] = now + CUT_S
            log.append(f"cut {host}")
        else:
            service = rng.choice(SERVICES)
            if tb.service_pid(host, service):
                tb.kill_service(host, service)
                log.append(f"kill {host} {service}")
        time.sleep(EVERY_S)
    for host in cut_until:
        tb.restore(host)


def check_once(tb: Testbed, root: Path, acked_files: list[Path]) -> dict[str, dict]:
    views = {}
    for h in ("h1", "h2", "h3"):
        out = root / f"seen-{h}.json"
        out.unlink(missing_ok=True)
        subprocess.run(worker(tb, h, "check", "--out", str(out), "--acked", *map(str, acked_files)),
                       cwd=REPO, capture_output=True, timeout=60)
        views[h] = json.loads(out.read_text()) if out.exists() else {}
    return views


def problems(views: dict[str, dict], acked: list[dict]) -> list[str]:
    """Everything acknowledged that does not hold now (empty: all is well)."""
    out = []
    ips = [a for a in acked if a["kind"] == "ip"]
    cidrs = [a["cidr"] for a in ips]
    dup = {c for c in cidrs if cidrs.count(c) > 1}
    out += [f"address {c} acknowledged twice" for c in sorted(dup)]
    for a in ips:
        held = views[a["host"]].get("ips", {}).get(a["ident"])
        if held != [a["cidr"]]:
            out.append(f"{a['ident']} on {a['host']}: acknowledged {a['cidr']}, holds {held}")
    for a in (a for a in acked if a["kind"] == "name"):
        for h, v in views.items():
            if a["ip"] not in v.get("names", {}).get(a["name"], []):
                out.append(f"{a['name']} -> {a['ip']} (added on {a['host']}) does not resolve on {h}")
    for a in (a for a in acked if a["kind"] == "policy"):
        for h, v in views.items():
            if a["name"] not in v.get("policies", []):
                out.append(f"policy {a['name']} (applied on {a['host']}) not enforced on {h}")
    for h, v in views.items():
        down = [s for s, ok in v.get("services", {}).items() if not ok]
        if not v or down:
            out.append(f"{h}: services not running and healthy: {down or 'no answer'}")
    return out


def test_acknowledged_work_survives_kills_and_cuts(testbed_factory, tmp_path):
    tb: Testbed = testbed_factory()
    tb.up(hosts=3, password="faults", profile="test")
    stop = tmp_path / "stop"
    acked_files = [tmp_path / f"acked-{h}.jsonl" for h in ("h1", "h2", "h3")]
    loads = [subprocess.Popen(worker(tb, h, "load", "--out", str(f), "--stop", str(stop)), cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for h, f in zip(("h1", "h2", "h3"), acked_files)]
    faults: list[str] = []
    try:
        time.sleep(2.0)  # the first allocations reach consensus before the first fault
        inject(tb, random.Random(), faults)
    finally:
        stop.touch()
        for p in loads:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    lines = [json.loads(line) for f in acked_files if f.exists() for line in f.read_text().splitlines() if line]
    acked = [a for a in lines if a["kind"] != "done"]
    done = {a["host"]: a for a in lines if a["kind"] == "done"}
    counts = {k: sum(1 for a in acked if a["kind"] == k) for k in ("ip", "name", "policy")}
    assert counts["ip"] >= 30 and counts["name"] >= 30 and counts["policy"] >= 3, (counts, done)

    last: list[str] = []

    def healed():
        nonlocal last
        last = problems(check_once(tb, tmp_path, acked_files), acked)
        return not last
    try:
        wait_until(healed, timeout=90, every=2.0, what="every acknowledged change in force")
    finally:
        print(f"\nfaults ({len(faults)}): {', '.join(faults)}")
        print(f"acknowledged: {counts['ip']} addresses, {counts['name']} names, {counts['policy']} policies; "
              f"failed requests while faulted: {sum(d['failures'] for d in done.values())}")
        print(f"not holding after healing: {len(last)}" + "".join(f"\n  {p}" for p in last[:20]))
    assert len(set(a["cidr"] for a in acked if a["kind"] == "ip")) == counts["ip"]
