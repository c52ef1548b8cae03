"""NPC benchmark: 100 NetworkPolicies over 1,000 pods, on a real kernel.

In a scratch network namespace (removed at the end; nothing else is touched), with
the nft backend, it times what the npc service does, through the same code paths
(PolicySources -> World -> NetworkPolicyController -> Netfilter.sync):

1. apply: 100 policies over 1,000 pods in 10 namespaces, from an empty kernel:
   compile (objects in, desired state out) + read (iptables-save, ipset save) + plan +
   the three restores;
2. label change: one pod's label flips so it leaves one selector's set and joins
   another's (a container event on its host), until the kernel holds it (planned
   from the state the last sync wrote, as the service does after an event);
3. resync: a full read + plan that finds nothing to do (the periodic repair's cost).

Each is printed next to a baseline measured in the same run on the same kernel (this
machine is shared: only ratios compare across runs), as ratio = ours / baseline:
- apply: one `iptables-restore` of as many plain rules plus one `ipset restore` of as
  many members (the tools' own floor for that much state);
- label change: one `ipset restore` of the same two member lines;
- resync: one `iptables-save` + `ipset save` (reading, without parsing).

    .venv/bin/python -m bench.npc [--pods 1000] [--policies 100] [--repeat 5]
"""
from __future__ import annotations

import argparse
import secrets
import statistics
import subprocess
import time
from collections.abc import Callable, Sequence

from services.npc.apply import Backend, Netfilter, RunResult, run_command
from services.npc.plan import plan_update
from services.npc.policy import NetworkPolicyController
from services.npc.sources import PolicySources, policy_key
from services.npc.world import World, objects_of
from shared.schemas.datapath import ContainerEvent

NAMESPACES = 10
APPS = 20
PEER = "aa:00:00:00:00:01"


def in_namespace(ns: str) -> Callable[[Sequence[str], str | None], RunResult]:
    return lambda argv, stdin=None: run_command(["ip", "netns", "exec", ns, *argv], stdin)


def pod_event(i: int, app: int | None = None) -> ContainerEvent:
    return ContainerEvent(kind="attached", container_id=f"pod{i}", cidrs=(f"10.{32 + i // 65536}.{i // 256 % 256}."
                                                                           f"{i % 256 or 1}/12",),
                          labels={"app": f"a{i % APPS if app is None else app}", "tier": f"t{i % 3}"},
                          namespace=f"ns{i % NAMESPACES}")


def policy(i: int) -> dict:
    """A mix like a real cluster's: pod selectors, namespace selectors, both, ipBlocks
    with excepts, ports, and one in five with egress rules."""
    peers = [{"podSelector": {"matchLabels": {"app": f"a{(i + 1) % APPS}"}}},
             {"namespaceSelector": {"matchLabels": {"team": f"t{i % 4}"}}},
             {"namespaceSelector": {"matchLabels": {"team": f"t{(i + 1) % 4}"}},
              "podSelector": {"matchLabels": {"tier": f"t{i % 3}"}}},
             {"ipBlock": {"cidr": "10.0.0.0/8", "except": [f"10.{40 + i % 8}.0.0/16"]}}]
    spec = {"podSelector": {"matchLabels": {"app": f"a{i % APPS}"}},
            "ingress": [{"from": peers[: 1 + i % 4], "ports": [{"port": 80}, {"protocol": "UDP", "port": 53}]}]}
    if i % 5 == 0:
        spec["policyTypes"] = ["Ingress", "Egress"]
        spec["egress"] = [{"to": [{"podSelector": {"matchLabels": {"app": f"a{(i + 2) % APPS}"}}}],
                           "ports": [{"port": 5432}]}]
    return {"kind": "NetworkPolicy", "metadata": {"name": f"p{i}", "namespace": f"ns{i % NAMESPACES}"}, "spec": spec}


class Host:
    """The npc pipeline minus the bus: sources -> world -> compiler -> netfilter."""

    def __init__(self, netfilter: Netfilter) -> None:
        self.netfilter = netfilter
        self.controller = NetworkPolicyController()
        self.world = World(self.controller)
        self.sources = PolicySources(PEER)

    def ingest(self, entries) -> None:
        for entry in entries:
            self.world.put(entry.key, objects_of(entry))

    def load(self, pods: int, policies: int) -> None:
        for n in range(NAMESPACES):
            self.ingest([self.sources.put(f"Namespace/ns{n}", {"metadata": {"labels": {"team": f"t{n % 4}"}}})])
        for i in range(pods):
            self.ingest(self.sources.container_event(pod_event(i)))
        for i in range(policies):
            self.ingest([self.sources.put(policy_key(f"ns{i % NAMESPACES}", f"p{i}"), policy(i))])


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def reset(run) -> None:
    for argv in (["iptables-nft", "-F"], ["iptables-nft", "-X"], ["ipset", "flush"], ["ipset", "destroy"]):
        run(argv, None)


def bench_apply(run, pods: int, policies: int) -> dict[str, float]:
    reset(run)
    host = Host(Netfilter(Backend.NFT, run=run))
    t0 = time.perf_counter()
    host.load(pods, policies)
    desired = host.controller.desired_state()
    t1 = time.perf_counter()
    chains, sets = host.netfilter.read()
    t2 = time.perf_counter()
    plan = plan_update(desired, chains, sets)
    t3 = time.perf_counter()
    host.netfilter.apply(plan)
    t4 = time.perf_counter()
    assert plan_update(desired, *host.netfilter.read()).empty, "the kernel did not converge"
    rules = sum(len(r) for r in desired.chains.values()) + sum(len(r) for r in desired.hooks.values())
    members = sum(len(s.members) for s in desired.ipsets.values())
    return {"compile": t1 - t0, "read": t2 - t1, "plan": t3 - t2, "restore": t4 - t3, "total": t4 - t0,
            "rules": rules, "sets": len(desired.ipsets), "members": members, "host": host}


def baseline_apply(run, rules: int, members: int) -> float:
    reset(run)
    script = "*filter\n:BENCH - [0:0]\n" + "".join(
        f"-A BENCH -s 10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}/32 -p tcp -m tcp --dport 80 -j ACCEPT\n"
        for i in range(rules)) + "COMMIT\n"
    sets = "create bench hash:ip comment\n" + "".join(
        f'add bench 10.{32 + i // 65536}.{i // 256 % 256}.{i % 256} comment "m{i}"\n' for i in range(members))
    return timed(lambda: (run(["iptables-nft-restore", "--noflush"], script), run(["ipset", "restore"], sets)))


def bench_label_change(host: Host, i: int) -> float:
    def change() -> None:
        current = host.sources.own_pods[f"pod{i}"]["labels"]["app"]
        host.ingest(host.sources.container_event(pod_event(i, app=(int(current[1:]) + 1) % APPS)))
        result = host.netfilter.sync(host.controller.desired_state(), fresh=False)  # as after a kick
        assert result.changed
    return timed(change)


def baseline_label_change(run) -> float:
    run(["ipset", "create", "bench2", "hash:ip", "comment"], None)
    script = 'add bench2 10.99.0.1 comment "pod"\ndel bench 10.32.0.1\n'
    return timed(lambda: run(["ipset", "restore", "-exist"], script))


def row(name: str, ours: float, base: float, base_name: str) -> None:
    print(f"  {name:<34} {ours * 1000:9.1f} ms   baseline {base * 1000:8.1f} ms ({base_name})   "
          f"ratio {ours / base:6.1f}x")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pods", type=int, default=1000)
    ap.add_argument("--policies", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)
    ns = f"wbench-npc-{secrets.token_hex(3)}"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    try:
        run = in_namespace(ns)
        applies = [bench_apply(run, args.pods, args.policies) for _ in range(args.repeat)]
        a = min(applies, key=lambda r: r["total"])
        host = a["host"]
        base_apply = min(baseline_apply(run, a["rules"], a["members"]) for _ in range(args.repeat))
        reset(run)
        host.netfilter.sync(host.controller.desired_state())
        changes = [bench_label_change(host, 7 + 10 * k) for k in range(args.repeat * 4)]
        resyncs = [timed(lambda: host.netfilter.sync(host.controller.desired_state())) for _ in range(args.repeat)]
        base_change = min(baseline_label_change(run) for _ in range(args.repeat))
        base_read = min(timed(lambda: (run(["iptables-nft-save", "-t", "filter"], None), run(["ipset", "save"], None)))
                        for _ in range(args.repeat))
        print(f"npc: {args.policies} policies over {args.pods} pods in {NAMESPACES} namespaces -> "
              f"{a['rules']} rules, {a['sets']} ipsets, {a['members']} members (iptables-nft, best of {args.repeat})")
        print(f"  apply breakdown: compile {a['compile'] * 1000:.1f} ms, read {a['read'] * 1000:.1f} ms, "
              f"plan {a['plan'] * 1000:.1f} ms, restore {a['restore'] * 1000:.1f} ms")
        row("apply from empty (total)", a["total"], base_apply, "plain restore of same rules+members")
        row("pod label change (median)", statistics.median(changes), base_change, "ipset restore of 2 lines")
        row("pod label change (max)", max(changes), base_change, "ipset restore of 2 lines")
        row("resync, nothing to do (median)", statistics.median(resyncs), base_read, "iptables-save + ipset save")
    finally:
        subprocess.run(["ip", "netns", "del", ns], check=False)


if __name__ == "__main__":
    main()
