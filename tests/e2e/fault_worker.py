"""A load generator and a checker for the fault-injection test (test_faults.py), run
inside one testbed host's namespace on that host's bus.

    python -m tests.e2e.fault_worker load  --state-dir D --host h1 --out F --stop S
    python -m tests.e2e.fault_worker check --state-dir D --acked F1 F2 ... --out R

`load` loops until the file S exists: allocate an address (ipam), name it (dns), and
every 8th round apply a NetworkPolicy (npc); each acknowledged operation (a reply, not
an error or a timeout) is appended to F as one JSON line, flushed at once. Failures are
expected while services die: they are counted, not recorded.

`check` reads every host's acknowledged lines and writes what this host sees of them:
the addresses its own ipam still holds, which names its weaveDNS resolves (real DNS
queries to 127.0.0.1:53), which policies its npc lists as enforced, and its services.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
from pathlib import Path

from shared import subjects
from shared.config import LaunchConfig
from shared.nats_bus import NatsBus
from shared.schemas import ServicesReply, ServicesRequest
from shared.schemas.dns import AddRequest, ChangeReply
from shared.schemas.ipam import AllocateReply, AllocateRequest, LookupReply, LookupRequest
from shared.schemas.npc import ApplyReply, ApplyRequest, ListReply, ListRequest

POLICY = """kind: NetworkPolicy
metadata: {{name: {name}, namespace: default}}
spec:
  podSelector: {{matchLabels: {{app: {name}}}}}
  ingress: [{{from: [{{podSelector: {{matchLabels: {{role: client}}}}}}]}}]
"""


async def connect(state_dir: Path) -> NatsBus:
    launch = LaunchConfig.load(state_dir)
    while True:
        try:
            return await NatsBus.connect(launch.bus_url, launch.bus_token(), "fault-worker", timeout=5)
        except Exception:  # noqa: BLE001 - the bus may be restarting
            await asyncio.sleep(0.2)


async def load(args) -> None:
    bus = await connect(Path(args.state_dir))
    out = open(args.out, "a", buffering=1)
    stop = Path(args.stop)
    failures = 0
    i = 0
    while not stop.exists():
        i += 1
        ident = f"c-{args.host}-{i}"
        try:
            got = await bus.request(subjects.request("ipam", "allocate"),
                                    AllocateRequest(ident=ident, wait_s=2.0), AllocateReply, timeout=2.5)
            out.write(json.dumps({"kind": "ip", "host": args.host, "ident": ident, "cidr": got.cidr}) + "\n")
            ip = got.cidr.split("/")[0]
            name = f"n-{args.host}-{i}.weave.local."
            await bus.request(subjects.request("dns", "add"),
                              AddRequest(container_id="weave:extern", ip=ip, fqdn=name), ChangeReply, timeout=2.0)
            out.write(json.dumps({"kind": "name", "host": args.host, "name": name, "ip": ip}) + "\n")
            if i % 8 == 0:
                policy = f"p-{args.host}-{i}"
                await bus.request(subjects.request("npc", "apply"), ApplyRequest(manifest=POLICY.format(name=policy)),
                                  ApplyReply, timeout=5.0)
                out.write(json.dumps({"kind": "policy", "host": args.host, "name": policy}) + "\n")
        except Exception:  # noqa: BLE001 - BusError, timeouts, a reconnecting nats: not acknowledged
            failures += 1
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.05)
    out.write(json.dumps({"kind": "done", "host": args.host, "rounds": i, "failures": failures}) + "\n")
    await bus.close()


def resolve(name: str) -> list[str]:
    from dnslib import QTYPE, DNSRecord
    try:
        raw = DNSRecord.question(name, "A").send("127.0.0.1", 53, timeout=2)
    except (OSError, socket.timeout):
        return []
    return sorted(str(rr.rdata) for rr in DNSRecord.parse(raw).rr if rr.rtype == QTYPE.A)


async def check(args) -> None:
    bus = await connect(Path(args.state_dir))
    acked = [json.loads(line) for f in args.acked for line in Path(f).read_text().splitlines() if line]
    seen: dict = {"host": args.host, "ips": {}, "names": {}, "policies": []}
    for a in acked:
        if a["kind"] == "ip" and a["host"] == args.host:
            got = await bus.request(subjects.request("ipam", "lookup"), LookupRequest(ident=a["ident"]),
                                    LookupReply, timeout=5)
            seen["ips"][a["ident"]] = list(got.cidrs)
        elif a["kind"] == "name":
            seen["names"][a["name"]] = await asyncio.to_thread(resolve, a["name"])
    listed = await bus.request(subjects.request("npc", "list"), ListRequest(), ListReply, timeout=5)
    seen["policies"] = [o.ref.name for o in listed.objects if o.ref.kind == "NetworkPolicy" and o.enforced]
    ps = await bus.request(subjects.supervisor("ps"), ServicesRequest(), ServicesReply, timeout=5)
    seen["services"] = {p.name: p.state == "running" and p.healthy for p in ps.processes}
    seen["restarts"] = {p.name: p.restarts for p in ps.processes}
    Path(args.out).write_text(json.dumps(seen))
    await bus.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["load", "check"])
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--host", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--stop", default="")
    ap.add_argument("--acked", nargs="*", default=[])
    args = ap.parse_args(argv)
    asyncio.run(load(args) if args.mode == "load" else check(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
