"""Property: any sequence of allocations, releases, donations (space requests) and
merges, delivered in any order, lost, across partitions, on N peers, keeps what peers
own disjoint and hands no address out twice; once healed and quiet, every request is
answered, the rings agree and cover the universe."""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shared.weave.peer_name import PeerName
from services.ipam.address import parse_subnet
from services.ipam.allocator import Allocator
from services.ipam.config import AllocatorConfig
from services.ipam.memory_network import MemoryNetwork

UNIVERSE = parse_subnet("10.9.0.0/26")  # 62 usable addresses: contention from the start
IDENTS = 10  # per peer, so at most 3 * 10 addresses are ever held at once

op = st.one_of(
    st.tuples(st.just("alloc"), st.integers(0, 2), st.integers(0, IDENTS - 1)),
    st.tuples(st.just("delete"), st.integers(0, 2), st.integers(0, IDENTS - 1)),
    st.tuples(st.just("deliver"), st.floats(0, 1, exclude_max=True)),
    st.tuples(st.just("deliver"), st.floats(0, 1, exclude_max=True)),
    st.tuples(st.just("drop"), st.floats(0, 1, exclude_max=True)),
    st.tuples(st.just("partition"), st.sets(st.integers(0, 2), max_size=2)),
    st.tuples(st.just("heal")),
    st.tuples(st.just("gossip")),
    st.tuples(st.just("tick")),
)


def build(n: int) -> tuple[MemoryNetwork, list[PeerName]]:
    names = [PeerName(0x0A0000000001 + i) for i in range(n)]
    net = MemoryNetwork(seed=n)
    for i, name in enumerate(names):
        net.add(Allocator(AllocatorConfig(name, 100 + i, UNIVERSE, quorum=n // 2 + 1, random_seed=i)))
    return net, names


def apply(net: MemoryNetwork, names: list[PeerName], k: int, step: tuple) -> None:
    kind = step[0]
    if kind in ("alloc", "delete"):
        peer = names[step[1] % len(names)]
        ident = f"{peer}-c{step[2]}"
        net.request(peer, "allocate" if kind == "alloc" else "delete", (kind, k), ident)
    elif kind in ("deliver", "drop") and net.queue:
        i = int(step[1] * len(net.queue))
        if kind == "deliver":
            net.step(i)
        else:
            net.queue.pop(i)
    elif kind == "partition":
        side = [names[i] for i in step[1] if i < len(names)]
        net.partition(side, [n for n in names if n not in side])
    elif kind == "heal":
        net.heal()
    elif kind == "gossip":
        net.gossip_round()
    elif kind == "tick":
        net.advance(5.0)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(2, 3), st.lists(op, max_size=100))
def test_ipam_is_safe_under_any_interleaving(n, steps):
    net, names = build(n)
    for k, step in enumerate(steps):
        apply(net, names, k, step)
        net.assert_safe()
    net.heal()
    net.request(names[0], "prime", "final-prime")  # make sure a ring exists in the end
    assert net.settle(rounds=40), net.unanswered()
    net.gossip_round()
    net.pump()
    net.assert_safe()
    net.assert_converged()
    assert all(r.ok for rid, r in net.replies.items() if rid[0] == "alloc")
    assert not net.errors
