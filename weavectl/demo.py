"""`weave demo` (what `make demo` runs): the showcase on a 3-host testbed.

Steps, each announced as it runs: hosts launched with a password, the encrypted mesh;
2 named containers per host (IPAM addresses, weaveDNS names); every container pings
every other across the sleeve overlay; every name resolves from every host; `weave
status` of each host; a datapath swap under a running ping, with the measured outage;
the trace of one `weave attach` across hosts; Weave Scope: h1's app (launched with
controls and a token) shows every host and container, and its page is forwarded to this
machine's loopback (weavectl/scope_forward.py). A summary at the end, exit 1 if anything
failed; the testbed is torn down unless --keep, and the last line is the page's URL
(with --keep it stays up: a live view of the testbed, terminals included).
"""
from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from weavectl.testbed import DEFAULT_ROOT, Testbed, TestbedError

CONTAINERS_PER_HOST = 2
SCOPE_PORT = 4040
"""Where the page is forwarded on this machine (any free port when that one is taken)."""


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="bring up a 3-host testbed and show what works")
    p.add_argument("--hosts", type=int, default=3)
    p.add_argument("--password", default="demo-secret")
    p.add_argument("--keep", action="store_true", help="leave the testbed up afterwards")
    p.add_argument("--quick", action="store_true", help="skip the datapath swap (CI-sized run)")
    p.add_argument("--root", type=Path, default=DEFAULT_ROOT / "demo")
    p.add_argument("--prefix", default="wd")
    p.set_defaults(handler=run_demo)


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


class Demo:
    def __init__(self, tb: Testbed, args: argparse.Namespace) -> None:
        self.tb, self.args = tb, args
        self.results: list[tuple[str, bool, str]] = []
        self.scope_token = secrets.token_hex(8)
        self.scope_url = ""

    def check(self, what: str, ok: bool, detail: str = "") -> bool:
        self.results.append((what, ok, detail))
        print(f"    [{'ok' if ok else 'FAILED'}] {what}{': ' + detail if detail else ''}", flush=True)
        return ok

    # -- steps ------------------------------------------------------------------------
    def launch(self) -> None:
        step(f"launching {self.args.hosts} hosts (network namespaces) with --password")
        started = time.monotonic()
        self.tb.up(self.args.hosts, password=self.args.password,
                   launch_args=("--scope-controls", "--scope-token", self.scope_token))
        self.check("stacks healthy", True, f"{time.monotonic() - started:.1f} s")
        want = len(self.tb.hosts) - 1
        ok = self._wait(lambda: all(len(self.established(h)) == want for h in self.tb.hosts), 30)
        self.check("encrypted mesh, every connection established", ok,
                   f"{time.monotonic() - started:.1f} s after launch began")

    def established(self, h) -> list[str]:
        out = self.tb.weave(h, "status", "connections", check=False).stdout
        return [line for line in out.splitlines() if " established " in line]

    def containers(self) -> None:
        step(f"attaching {CONTAINERS_PER_HOST} named containers per host (addresses from IPAM)")
        for h in self.tb.hosts:
            for k in range(1, CONTAINERS_PER_HOST + 1):
                name = f"{h.nickname}c{k}.weave.local"
                self.tb.add_container(h, k, name=name)
        for h in self.tb.hosts:
            print(self.tb.weave(h, "ps", check=False).stdout.rstrip())

    def all_addresses(self) -> dict[str, str]:
        return {ns.split("-", 1)[1]: addrs[0].split("/")[0]
                for h in self.tb.hosts for ns, addrs in h.addresses.items() if addrs}

    def pings(self) -> None:
        addrs = self.all_addresses()
        pairs = [(a, b) for a in addrs for b in addrs if a != b]
        step(f"every container pings every other ({len(pairs)} pairs)")

        def ping(pair):
            src, dst = pair
            return pair, self.tb.exec(src, ["ping", "-c", "2", "-W", "2", "-q", addrs[dst]]).returncode == 0

        with ThreadPoolExecutor(8) as pool:
            failed = [p for p, ok in pool.map(ping, pairs) if not ok]
        self.check("all pings answered", not failed, ", ".join(f"{a}->{b}" for a, b in failed[:6]))

    def names(self) -> None:
        addrs = self.all_addresses()
        step("every container name resolves from every host (weaveDNS, gossiped)")
        bad = []
        for h in self.tb.hosts:
            for name, ip in addrs.items():
                out = self.tb.weave(h, "dns-lookup", name, check=False).stdout.split()
                if ip not in out:
                    bad.append(f"{name}@{h.nickname}")
        self.check("names resolve across hosts", not bad, ", ".join(bad[:6]))

    def status(self) -> None:
        step("weave status of each host")
        for h in self.tb.hosts:
            print(f"-- {h.nickname}")
            print(self.tb.weave(h, "status", check=False).stdout.rstrip())

    def swap(self) -> None:
        step("datapath swap on h1 under a running ping (weave restart datapath)")
        addrs = self.all_addresses()
        target = next(n for n in addrs if n.startswith("h2"))
        interval, count = 0.02, 400
        ping = subprocess.Popen(["ip", "netns", "exec", f"{self.tb.prefix}-h1c1", "ping", "-i", str(interval),
                                 "-c", str(count), "-W", "1", "-q", addrs[target]], stdout=subprocess.PIPE, text=True)
        time.sleep(1.0)
        swap = self.tb.weave("h1", "restart", "datapath", check=False)
        out, _ = ping.communicate(timeout=60)
        received = next((int(w) for line in out.splitlines() if "received" in line
                         for w in line.replace(",", "").split()[3:4]), 0)
        lost = count - received
        self.check("datapath restarted, containers kept their addresses", swap.returncode == 0,
                   swap.stdout.strip() or swap.stderr.strip())
        self.check("traffic resumed", received > count / 2,
                   f"{lost} of {count} pings lost = {lost * interval * 1000:.0f} ms outage")

    def trace(self) -> None:
        step("the trace of one `weave attach`, across hosts")
        h1 = self.tb.hosts[0]
        others = [arg for h in self.tb.hosts[1:] for arg in ("--also", h.state_dir)]
        out = self.tb.weave(h1, "trace", "--last", "1", "--match", "weave attach", *others, check=False)
        print(out.stdout.rstrip())
        hosts = {h.nickname for h in self.tb.hosts if f"@{h.nickname})" in out.stdout}
        self.check("one trace spans the CLI, local services and other hosts", len(hosts) > 1,
                   f"spans on {', '.join(sorted(hosts)) or 'no host'}")

    def scope(self) -> None:
        step("Weave Scope: h1's app shows the testbed; its page is forwarded to this machine")
        base = self._forward()
        if not self.check("the page is forwarded from h1", bool(base), base or "the forwarder did not start"):
            return
        want = {h.nickname for h in self.tb.hosts}
        containers = {ns.split("-", 1)[1] for h in self.tb.hosts for ns in h.containers}
        seen: dict = {}

        def shown() -> bool:
            seen["hosts"] = {n["label"] for n in self._scope(base, "/api/topology/hosts").values()}
            seen["containers"] = {n["label"].split("-", 1)[-1] for n in self._scope(base, "/api/topology/containers")
                                  .values() if not n.get("pseudo")}
            return seen["hosts"] == want and containers <= seen["containers"]

        ok = self._wait(shown, 30)
        self.check("h1's Scope app shows every host and container", ok,
                   f"{len(seen.get('hosts', ()))} hosts, {len(seen.get('containers', ()))} containers")
        self.scope_url = f"{base}/login?token={self.scope_token}"

    def _forward(self) -> str:
        """Start the forwarder into h1 (detached: it lives as long as the testbed); its URL."""
        log = self.tb.root / "scope-forward.log"
        for listen in (f"127.0.0.1:{SCOPE_PORT}", "127.0.0.1:0"):
            with open(log, "w") as out:
                proc = subprocess.Popen([sys.executable, "-m", "weavectl.scope_forward", "--netns",
                                         self.tb.hosts[0].ns, "--listen", listen], stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            deadline = time.monotonic() + 10
            while proc.poll() is None and time.monotonic() < deadline:
                line = log.read_text()
                if line.startswith("listening on "):
                    return "http://" + line.split()[2]
                time.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
        return ""

    def _scope(self, base: str, path: str) -> dict:
        req = urllib.request.Request(base + path, headers={"Authorization": f"Bearer {self.scope_token}"})
        try:
            with urllib.request.urlopen(req, timeout=3) as resp:
                return json.loads(resp.read()).get("nodes", {})
        except (OSError, ValueError):
            return {}

    def _wait(self, cond, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return True
            time.sleep(0.2)
        return False

    def run(self) -> int:
        steps = [self.launch, self.containers, self.pings, self.names, self.status]
        if not self.args.quick:
            steps.append(self.swap)
        steps += [self.trace, self.scope]
        for fn in steps:
            try:
                fn()
            except (TestbedError, subprocess.SubprocessError, OSError, StopIteration) as exc:
                self.check(fn.__name__, False, str(exc))
                break
        failed = [r for r in self.results if not r[1]]
        step(f"summary: {len(self.results) - len(failed)} of {len(self.results)} checks passed")
        for what, _, detail in failed:
            print(f"    FAILED {what}: {detail}")
        return 1 if failed else 0


def run_demo(args: argparse.Namespace) -> int:
    tb = Testbed(args.root, args.prefix)
    if tb.namespaces():
        step(f"removing a previous demo testbed ({args.prefix}-*)")
        tb.down()
    code, demo = 1, None
    try:
        demo = Demo(tb, args)
        code = demo.run()
    finally:
        if args.keep and code == 0:
            step(f"testbed left up: 'weave testbed --root {args.root} --prefix {args.prefix} status|exec|down'")
        else:
            step("tearing the testbed down")
            tb.down()
    if demo is not None and demo.scope_url:
        if args.keep and code == 0:
            print(f"Weave Scope, live view of the testbed (h1's app, controls on): {demo.scope_url}", flush=True)
        else:
            print(f"Weave Scope was at {demo.scope_url} (gone with the testbed; 'weave demo --keep' keeps it)",
                  flush=True)
    return code


if __name__ == "__main__":
    sys.exit(run_demo(argparse.Namespace(hosts=3, password="demo-secret", keep=False, quick=False,
                                         root=DEFAULT_ROOT / "demo", prefix="wd")))
