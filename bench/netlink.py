"""rtnetlink as the datapath uses it: shared/netlink.py (ours) beside pyroute2 0.9's
IPRoute, which it replaced (issue 15), each in a fresh process inside the same scratch
namespace holding `--links` veth pairs:

- import: importing the handle's module (pyroute2 as shared/netlink.py imported it, its
  package `__init__` left out);
- first dump: the first handle and link dump of the process (what a service pays once);
- dump, lookup, set: per call, after warming (a link dump, `link_lookup(ifname=)`, and
  `link("set", mtu=)` on one veth);
- handle: opening and closing one handle (the datapath opens one per operation).

pyroute2 is not a dependency any more: give its install dir (`pip install --target DIR
pyroute2`) with `--pyroute2 DIR`, or its rows are left out.

    python -m bench.netlink [--links 50] [--calls 300] [--pyroute2 DIR]

Needs root. Its namespace is `wnb<hex>`, removed at the end.
"""
from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _handle_class(impl: str):
    if impl == "ours":
        from shared.netlink import IPRoute
        return IPRoute
    from shared.imports import bare_package
    bare_package("pyroute2")
    from pyroute2.iproute.linux import IPRoute
    return IPRoute


def worker(impl: str, calls: int) -> dict:
    """Run inside the scratch namespace; one implementation per process."""
    t0 = time.perf_counter()
    IPRoute = _handle_class(impl)
    imported = time.perf_counter() - t0
    t0 = time.perf_counter()
    with IPRoute() as ipr:
        links = ipr.get_links()
    first = time.perf_counter() - t0
    out = {"import_ms": imported * 1e3, "first_dump_ms": first * 1e3, "links": len(links)}
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname="wnb0a")[0]
        for name, call in (("dump_ms", lambda: ipr.get_links()),
                           ("lookup_us", lambda: ipr.link_lookup(ifname="wnb0a")),
                           ("set_us", lambda: ipr.link("set", index=index, mtu=1400))):
            for _ in range(10):
                call()
            n = max(10, calls // 10) if name == "dump_ms" else calls
            t0 = time.perf_counter()
            for _ in range(n):
                call()
            per = (time.perf_counter() - t0) / n
            out[name] = per * (1e3 if name.endswith("_ms") else 1e6)
    t0 = time.perf_counter()
    for _ in range(calls):
        IPRoute().close()
    out["handle_us"] = (time.perf_counter() - t0) / calls * 1e6
    return out


def _run(ns: str, impl: str, calls: int, pyroute2_dir: str | None) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), pyroute2_dir])))
    code = f"import json, bench.netlink as b; print(json.dumps(b.worker({impl!r}, {calls})))"
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, timeout=300, check=True)
    return json.loads(out.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--links", type=int, default=50, help="veth pairs in the namespace (twice as many links)")
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--pyroute2", metavar="DIR", help="where pyroute2 is installed (pip install --target DIR)")
    args = ap.parse_args()
    ns = f"wnb{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        batch = "".join(f"link add wnb{i}a type veth peer name wnb{i}b\n" for i in range(args.links))
        subprocess.run(["ip", "-n", ns, "-batch", "-"], input=batch, text=True, check=True)
        impls = ["ours"] + (["pyroute2"] if args.pyroute2 else [])
        rows = {impl: _run(ns, impl, args.calls, args.pyroute2) for impl in impls}
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)
    links = rows["ours"]["links"]
    print(f"rtnetlink in one namespace with {links} links ({args.calls} calls each)")
    print(f"{'':28}" + "".join(f"{impl:>12}" for impl in impls) + ("   pyroute2/ours" if len(impls) > 1 else ""))
    for key, label in (("import_ms", "import (ms)"), ("first_dump_ms", "first handle + dump (ms)"),
                       ("dump_ms", "link dump (ms)"), ("lookup_us", "lookup by name (us)"),
                       ("set_us", "set mtu (us)"), ("handle_us", "open + close handle (us)")):
        line = f"{label:28}" + "".join(f"{rows[impl][key]:12.2f}" for impl in impls)
        if len(impls) > 1:
            line += f"   {rows['pyroute2'][key] / rows['ours'][key]:6.1f}x"
        print(line)
    if len(impls) == 1:
        print("(pyroute2's rows: pip install --target DIR pyroute2, then --pyroute2 DIR)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
