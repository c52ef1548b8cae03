"""In-process IPAM clusters: allocator cores over the in-memory mesh, manual time,
every message through the real codec. No sleeps: pump until quiet."""
import pytest

from shared.weave.peer_name import PeerName
from services.ipam import status
from services.ipam.address import parse_cidr, parse_subnet
from services.ipam.allocator import Allocator
from services.ipam.config import AllocatorConfig
from services.ipam.errors import DifferentSeedsError
from services.ipam.memory_network import MemoryNetwork

NAMES = [PeerName(0xAA0000000001 + i) for i in range(5)]
SMALL = parse_subnet("10.0.0.0/22")  # 1022 usable addresses: 1,000 allocations force donations


def make_net(n=5, universe=SMALL, seed=0, loss=0.0, shuffle=False, **config):
    net = MemoryNetwork(seed=seed, loss=loss, shuffle=shuffle)
    quorum = config.pop("quorum", n // 2 + 1)
    for i in range(n):
        net.add(Allocator(AllocatorConfig(NAMES[i], 1000 + i, universe, f"h{i + 1}", quorum=quorum,
                                          random_seed=seed * 10 + i, **config)))
    return net


def allocated(net):
    return net.allocated()


def assert_safe(net):
    net.assert_safe()


def assert_converged(net):
    net.assert_converged()


def test_five_peers_reach_consensus_and_1000_allocations_are_unique():
    net = make_net()
    for k in range(1000):
        net.request(NAMES[k % 5], "allocate", k, f"c{k}")
        net.pump()
    assert net.settle()
    results = [net.replies[k] for k in range(1000)]
    assert all(r.ok for r in results)
    addrs = [r.result.addr for r in results]
    assert len(set(addrs)) == 1000
    assert all(SMALL.host_range().contains(a) for a in addrs)
    net.gossip_round()
    net.pump()
    assert_converged(net)
    assert_safe(net)
    assert not net.errors
    assert {status.status(a) for a in net.allocators.values()} == {"ready"}
    assert {a.space.num_owned() for a in net.allocators.values()} == {200}


def test_consensus_survives_loss_and_reordering():
    net = make_net(seed=3, loss=0.3, shuffle=True)
    for k in range(50):
        net.request(NAMES[k % 5], "allocate", k, f"c{k}")
    assert net.settle()
    assert all(net.replies[k].ok for k in range(50))
    net.loss = 0.0
    net.gossip_round()
    net.pump()
    assert_converged(net)
    assert_safe(net)


def test_idle_until_asked_then_awaiting_consensus_without_quorum():
    net = make_net()
    assert {status.status(a) for a in net.allocators.values()} == {"idle"}
    net.partition([NAMES[0], NAMES[1]], NAMES[2:])
    net.request(NAMES[0], "allocate", "x", "c")
    net.pump()
    assert status.status(net.allocators[NAMES[0]]) == "awaiting consensus (quorum: 3, known: 2)"
    assert "x" in net.unanswered()
    net.heal()
    assert net.settle()
    assert net.replies["x"].ok and status.status(net.allocators[NAMES[0]]) == "ready"


def test_partition_both_sides_allocate_then_heal_loses_and_duplicates_nothing():
    net = make_net()
    net.request(NAMES[0], "prime", "prime")
    assert net.settle()
    left, right = NAMES[:2], NAMES[2:]
    ring = net.allocators[NAMES[0]].ring
    left_owned = sum(r.size for name in left for r in ring.owned_ranges(name))
    n_left, n_right = left_owned + 20, 60  # the left side needs more than it owns
    assert n_left + n_right <= SMALL.host_range().size
    net.partition(left, right)
    for k in range(max(n_left, n_right)):
        if k < n_left:
            net.request(left[k % 2], "allocate", ("L", k), f"l{k}")
        if k < n_right:
            net.request(right[k % 3], "allocate", ("R", k), f"r{k}")
        net.pump()
    net.settle(rounds=3)
    waiting = net.unanswered()
    assert waiting and all(side == "L" for side, _ in waiting)
    assert "waiting for IP range grant from peers" in {status.status(net.allocators[n]) for n in left}
    assert_safe(net)
    net.heal()
    assert net.settle()
    assert all(r.ok for r in net.replies.values())
    assert len(allocated(net)) == n_left + n_right
    net.gossip_round()
    net.pump()
    assert_converged(net)
    assert_safe(net)
    assert not net.errors


def test_rmpeer_after_a_peer_vanishes_frees_its_space():
    net = make_net()
    for k in range(20):
        net.request(NAMES[k % 5], "allocate", k, f"c{k}")
    assert net.settle()
    gone = NAMES[4]
    gone_size = sum(r.size for r in net.allocators[gone].ring.owned_ranges())
    net.remove(gone)
    survivor = net.allocators[NAMES[0]]
    assert any(not e["IsKnownPeer"] for e in status.report(survivor)["Entries"])
    net.request(NAMES[0], "rmpeer", "rm", "h5")  # by nickname
    net.pump()
    assert net.replies["rm"].result == gone_size
    versions = [e.version for e in survivor.ring.entries if e.peer == NAMES[0]]
    assert max(versions) >= 100
    for name, a in net.allocators.items():
        assert gone not in a.ring.peer_names(), name
    for k in range(20, 1000):
        net.request(NAMES[k % 4], "allocate", k, f"c{k}")
        net.pump()
    assert net.settle()
    assert all(r.ok for r in net.replies.values())
    assert len(allocated(net)) == 1000 - 4  # what the dead peer handed out went with it
    assert_safe(net)


def test_all_owners_unreachable_status_and_rmpeer_unblocks_allocation():
    net = MemoryNetwork()
    seed = (NAMES[0],)  # the ring gives everything to NAMES[0]
    for i in range(2):
        net.add(Allocator(AllocatorConfig(NAMES[i], i, SMALL, f"h{i + 1}", seed=seed)))
    net.remove(NAMES[0])
    lonely = net.allocators[NAMES[1]]
    net.request(NAMES[1], "allocate", "a", "c")
    assert not net.settle(rounds=2)
    assert status.status(lonely) == status.UNREACHABLE
    assert status.report(lonely)["PendingAllocates"] == ["c 10.0.0.0/22"]
    net.request(NAMES[1], "rmpeer", "rm", "aa:00:00:00:00:01")
    assert net.settle()
    assert net.replies["rm"].result == 1024 - 1  # all of it, less the address just allocated
    assert str(net.replies["a"].result) == "10.0.0.1/22"
    assert status.status(lonely) == "ready"


def test_observer_allocation_triggers_an_election_among_voters():
    net = MemoryNetwork(seed=2)
    for i in range(2):
        net.add(Allocator(AllocatorConfig(NAMES[i], i + 1, SMALL, f"v{i}", quorum=2)))
    observer = net.add(Allocator(AllocatorConfig(NAMES[2], 3, SMALL, "o", observer=True, quorum=0)))
    net.request(NAMES[2], "allocate", "o1", "c")
    assert status.status(observer) == "priming"
    assert net.settle()
    assert net.replies["o1"].ok
    assert {status.status(a) for a in net.allocators.values()} == {"ready"}
    assert NAMES[2] not in net.allocators[NAMES[0]].ring.seeds  # observers never vote


def test_observers_alone_cannot_make_a_ring():
    net = MemoryNetwork()
    for i in range(2):
        net.add(Allocator(AllocatorConfig(NAMES[i], i + 1, SMALL, observer=True, quorum=0)))
    net.request(NAMES[0], "allocate", "a", "c")
    assert not net.settle(rounds=3)
    assert status.status(net.allocators[NAMES[0]]) == "priming"


def test_seeded_peers_agree_without_talking_and_other_seeds_are_refused():
    net = MemoryNetwork()
    a, b = (net.add(Allocator(AllocatorConfig(NAMES[i], i, SMALL, seed=(NAMES[1], NAMES[0])))) for i in range(2))
    assert a.ring == b.ring.copy(peer=a.our_name) and not net.errors
    stranger = net.add(Allocator(AllocatorConfig(NAMES[2], 2, SMALL, seed=(NAMES[2],))))
    net.gossip_round()
    net.pump()
    assert net.errors and all(isinstance(e, DifferentSeedsError) for _, e in net.errors)
    assert "seeded by different peers" in net.errors[0][1].message
    assert status.status(stranger) == "ready"  # still serving its own ring


def test_restart_with_persisted_state_keeps_addresses():
    net = make_net(n=3)
    for k in range(30):
        net.request(NAMES[k % 3], "allocate", k, f"c{k}")
    assert net.settle()
    before = {c.addr for c in net.allocators[NAMES[1]].owned.all_cidrs()}
    snapshot = net.snapshots[NAMES[1]]
    net.remove(NAMES[1])
    again = net.add(Allocator(AllocatorConfig(NAMES[1], 4242, SMALL, "h2", quorum=2)), snapshot=snapshot)
    assert {c.addr for c in again.owned.all_cidrs()} == before
    for k in range(30, 60):
        net.request(NAMES[k % 3], "allocate", k, f"c{k}")
    assert net.settle()
    assert all(r.ok for r in net.replies.values())
    assert_safe(net)


def test_claims_across_peers():
    net = make_net(n=2, quorum=2)
    net.request(NAMES[0], "prime", "p")
    assert net.settle()
    theirs = net.allocators[NAMES[1]].ring.owned_ranges()[0]
    addr = f"10.0.{(theirs.start >> 8) & 255}.{(theirs.start & 255) + 5}/22"
    net.request(NAMES[0], "claim", "c1", "x", addr)  # free at its owner: donated, then claimed
    assert net.settle()
    assert net.replies["c1"].ok
    assert net.allocators[NAMES[0]].ring.owner(parse_cidr(addr).addr) == NAMES[0]
    net.request(NAMES[1], "allocate", "a", "y", f"{parse_cidr(addr).network()}")
    assert net.settle()
    used = parse_cidr(str(net.replies["a"].result)).addr
    mine = net.allocators[NAMES[1]].ring.owner(used)
    net.request(NAMES[0], "claim", "c2", "z", f"10.0.{(used >> 8) & 255}.{used & 255}/22")
    assert net.settle()
    assert mine == NAMES[1] and net.replies["c2"].error.code == "owned_by_other_peer"
    assert "owned by other peer aa:00:00:00:00:02 (h2)" in net.replies["c2"].error.message
    assert_safe(net)


@pytest.mark.parametrize("seed", range(3))
def test_random_churn_with_partitions_and_loss(seed):
    net = make_net(seed=seed, loss=0.2, shuffle=True, universe=parse_subnet("10.0.0.0/24"))
    rng = net.rng
    for k in range(150):
        name = rng.choice(NAMES)
        roll = rng.random()
        if roll < 0.6:
            net.request(name, "allocate", k, f"c{k % 40}")
        elif roll < 0.8:
            net.request(name, "delete", k, f"c{rng.randrange(40)}")
        elif roll < 0.9:
            net.partition(rng.sample(NAMES, 2))
        else:
            net.heal()
        for _ in range(rng.randrange(6)):
            net.step()
        assert_safe(net)
    net.heal()
    net.loss = 0.0
    assert net.settle()
    net.gossip_round()
    net.pump()
    assert_converged(net)
    assert_safe(net)


def test_many_allocations_waiting_for_space_ask_a_donor_once():
    """A peer with no space and 30 allocations waiting sends one SpaceRequest, not 30:
    the donor halves its free space once, not 30 times (it kept 1/2**30 before)."""
    net = MemoryNetwork(seed=1)
    universe = parse_subnet("10.0.0.0/16")
    donor, asker = (net.add(Allocator(AllocatorConfig(NAMES[i], 1 + i, universe, f"h{i + 1}", seed=(NAMES[0],))))
                    for i in range(2))
    for k in range(30):
        net.request(NAMES[1], "allocate", k, f"c{k}")
    assert [d.kind for d in net.queue].count("unicast") == 1, "one SpaceRequest"
    assert net.settle()
    assert all(net.replies[k].ok for k in range(30))
    assert donor.space.num_free() >= universe.size // 2 - 2
    assert_safe(net)
