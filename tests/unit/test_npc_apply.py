"""Applying desired states through the tools (against the in-memory kernel twin): the
three steps in order, failures named and fail-closed, the Enforcer's retries, error
count, resync repairs, and backend detection."""
from __future__ import annotations

import asyncio

import pytest

from services.npc.apply import ApplyError, Backend, Enforcer, EnforcerConfig, Netfilter, RunResult, detect_backend
from services.npc.ipset import IPSet, IPSetType
from services.npc.memory_netfilter import MemoryKernel
from services.npc.plan import plan_update
from services.npc.policy import NetworkPolicyController, default_allow_set_name
from services.npc.rule import PolicyType
from services.npc.shortname import ipset_name

from .test_npc_policy import ns, pod, policy

ALLOW_DB = """
metadata: {name: web}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress: [{from: [{podSelector: {matchLabels: {app: db}}}]}]
"""
WEB = ipset_name("default:app=web")
ING = default_allow_set_name("default", PolicyType.INGRESS)


def cluster():
    c = NetworkPolicyController()
    c.add_namespace(ns("default"))
    c.add_pod(pod("web", "default", "10.32.0.1", app="web"))
    c.add_pod(pod("db", "default", "10.32.0.2", app="db"))
    return c


def test_sync_converges_and_then_does_nothing():
    kernel, c = MemoryKernel(), cluster()
    nf = Netfilter(Backend.NFT, run=kernel.run)
    first = nf.sync(c.desired_state())
    assert first.changed and kernel.calls == ["iptables-nft-save", "ipset", "ipset", "iptables-nft-restore",
                                              "ipset"]
    assert set(kernel.sets[ING].members) == {"10.32.0.1", "10.32.0.2"}
    c.add_network_policy(policy(ALLOW_DB))
    assert nf.sync(c.desired_state()).changed
    assert set(kernel.sets[WEB].members) == {"10.32.0.1"} and set(kernel.sets[ING].members) == {"10.32.0.2"}
    assert not nf.sync(c.desired_state()).changed


def test_a_failed_iptables_step_leaves_only_tightening_and_the_next_sync_completes():
    kernel, c = MemoryKernel(), cluster()
    nf = Netfilter(Backend.NFT, run=kernel.run)
    nf.sync(c.desired_state())
    c.add_network_policy(policy(ALLOW_DB))
    kernel.fail("iptables-nft-restore", stderr="iptables-restore: line 5 failed")
    with pytest.raises(ApplyError) as err:
        nf.sync(c.desired_state())
    assert err.value.step == "iptables-restore" and "line 5 failed" in err.value.message
    # step 1 ran: web left the default-allow set (tighter); no allow rule for db yet
    assert set(kernel.sets[ING].members) == {"10.32.0.2"}
    assert not any("app=db" in " ".join(r) for r in kernel.chains["WEAVE-NPC-INGRESS"])
    assert nf.sync(c.desired_state()).changed
    chains, sets = nf.read()
    assert plan_update(c.desired_state(), chains, sets).empty


def test_an_event_sync_plans_from_what_was_last_written_and_a_fresh_one_reads():
    kernel, c = MemoryKernel(), cluster()
    nf = Netfilter(Backend.NFT, run=kernel.run)
    nf.sync(c.desired_state(), fresh=False)  # nothing known yet: reads anyway
    assert kernel.calls[:2] == ["iptables-nft-save", "ipset"]
    c.add_network_policy(policy(ALLOW_DB))
    kernel.calls.clear()
    nf.sync(c.desired_state(), fresh=False)
    assert "iptables-nft-save" not in kernel.calls and set(kernel.sets[WEB].members) == {"10.32.0.1"}
    kernel.chains["WEAVE-NPC-INGRESS"] = []  # changed behind our back: only a fresh sync sees it
    assert not nf.sync(c.desired_state(), fresh=False).changed
    assert nf.sync(c.desired_state(), fresh=True).changed and kernel.chains["WEAVE-NPC-INGRESS"]
    kernel.fail("iptables-nft-restore")
    c.delete_network_policy(policy(ALLOW_DB))
    with pytest.raises(ApplyError):
        nf.sync(c.desired_state(), fresh=False)
    kernel.calls.clear()
    nf.sync(c.desired_state(), fresh=False)
    assert kernel.calls[0] == "iptables-nft-save", "after a failure the kernel is read again"


def test_read_failures_are_apply_errors():
    kernel = MemoryKernel()
    kernel.fail("ipset", stderr="ipset: cannot talk to the kernel")
    with pytest.raises(ApplyError) as err:
        Netfilter(Backend.LEGACY, run=kernel.run).read()
    assert err.value.step == "ipset save" and kernel.calls == ["iptables-legacy-save", "ipset"]


@pytest.mark.parametrize("legacy, nft, expected", [
    ("*filter\n:WEAVE-NPC - [0:0]\nCOMMIT\n", "*filter\n-A FORWARD -j X\n-A FORWARD -j Y\nCOMMIT\n", Backend.LEGACY),
    ("*filter\n-A FORWARD -j X\nCOMMIT\n", "*filter\n:WEAVE-NPC - [0:0]\nCOMMIT\n", Backend.NFT),
    ("*filter\n-A FORWARD -j X\n-A INPUT -j Y\nCOMMIT\n", "*filter\n-A FORWARD -j X\nCOMMIT\n", Backend.LEGACY),
    ("", "", Backend.NFT),
    (None, "", Backend.NFT),  # no legacy binary
])
def test_backend_detection(legacy, nft, expected):
    def run(argv, stdin):
        out = legacy if argv[0] == "iptables-legacy-save" else nft
        return RunResult(127, "", "not found") if out is None else RunResult(0, out, "")
    assert detect_backend(run) is expected


FAST = EnforcerConfig(resync_s=0.05, retry_initial_s=0.01, retry_max_s=0.04)


async def start(kernel, c, config=FAST):
    errors = []
    enforcer = Enforcer(Netfilter(Backend.NFT, run=kernel.run), c.desired_state, config, errors.append)
    task = asyncio.get_running_loop().create_task(enforcer.run())
    return enforcer, task, errors


async def until(cond, timeout=5.0):
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.005)


async def test_enforcer_retries_counts_and_recovers():
    kernel, c = MemoryKernel(), cluster()
    kernel.fail("iptables-nft-restore", times=3)
    enforcer, task, errors = await start(kernel, c)
    try:
        await until(lambda: enforcer.errors == 3 and enforcer.synced)
        assert [e.step for e in errors] == ["iptables-restore"] * 3 and enforcer.applied == 1
        c.add_network_policy(policy(ALLOW_DB))
        enforcer.kick()
        async with asyncio.timeout(5):
            await enforcer.wait_applied()
        assert set(kernel.sets[WEB].members) == {"10.32.0.1"}
    finally:
        task.cancel()


async def test_enforcer_resync_repairs_what_was_flushed_by_hand():
    kernel, c = MemoryKernel(), cluster()
    c.add_network_policy(policy(ALLOW_DB))
    enforcer, task, _ = await start(kernel, c)
    try:
        await until(lambda: enforcer.synced)
        kernel.chains["WEAVE-NPC-INGRESS"] = []
        kernel.chains["FORWARD"] = []
        kernel.sets[ING] = IPSet(ING, IPSetType.HASH_IP, {})
        await until(lambda: kernel.chains["WEAVE-NPC-INGRESS"] and len(kernel.chains["FORWARD"]) == 6
                    and set(kernel.sets[ING].members) == {"10.32.0.2"})
        assert enforcer.errors == 0
    finally:
        task.cancel()


async def test_a_compiler_crash_is_counted_and_retried():
    kernel, c = MemoryKernel(), cluster()
    calls = []

    def desired():
        calls.append(1)
        if len(calls) < 3:
            raise RuntimeError("bug")
        return c.desired_state()

    enforcer = Enforcer(Netfilter(Backend.NFT, run=kernel.run), desired, FAST)
    task = asyncio.get_running_loop().create_task(enforcer.run())
    try:
        await until(lambda: enforcer.synced)
        assert enforcer.errors == 2
    finally:
        task.cancel()
