"""Connection maker: targets, backoff with a seeded Random and explicit `now`, limits."""
import random

import pytest

from services.gossip.connection_maker import (
    INITIAL_INTERVAL,
    MAX_INTERVAL,
    ConnectionMaker,
    Dial,
    EndReason,
    TargetState,
)
from services.gossip.peer import ConnectionSummary, LocalPeer, Peer
from shared.weave.peer_name import PeerName, PeerUID
from services.gossip.peers import Peers

N = PeerName
US = N(1)


def empty_topology():
    return Peers(LocalPeer(US, "us", PeerUID(1), 0, 1, True), random.Random(0))


def maker(seed=1, **kw):
    return ConnectionMaker(US, random.Random(seed), **kw)


def test_first_try_is_immediate_with_default_port():
    cm = maker()
    assert cm.add_direct(["10.0.0.2", "10.0.0.3:7000"], now=5.0) == []
    assert cm.refresh(5.0, empty_topology(), []) == [
        Dial("10.0.0.2:6783", True), Dial("10.0.0.3:7000", True)]
    assert cm.next_deadline() is None
    assert cm.refresh(6.0, empty_topology(), []) == []  # already attempting


def test_backoff_intervals_grow_and_cap():
    cm = maker(seed=42)
    cm.add_direct(["10.0.0.2"], now=0.0)
    now, interval, addr = 0.0, INITIAL_INTERVAL, "10.0.0.2:6783"
    assert cm.refresh(now, empty_topology(), []) == [Dial(addr, True)]
    for _ in range(20):
        cm.connection_failed(addr, now, "connection refused")
        assert cm.refresh(now, empty_topology(), []) == []
        due = cm.next_deadline()
        assert interval / 2 <= due - now < interval * 1.5
        assert cm.refresh(due - 1e-6, empty_topology(), []) == []
        assert cm.refresh(due, empty_topology(), []) == [Dial(addr, True)]
        now, interval = due, min(interval * 1.5, MAX_INTERVAL)
    assert interval == MAX_INTERVAL


def test_backoff_is_reproducible_with_the_same_seed():
    def run(seed):
        cm = maker(seed=seed)
        cm.add_direct(["10.0.0.2"], now=0.0)
        cm.refresh(0.0, empty_topology(), [])
        deadlines = []
        for _ in range(5):
            cm.connection_failed("10.0.0.2:6783", 0.0, "refused")
            cm.refresh(0.0, empty_topology(), [])
            deadlines.append(cm.next_deadline())
        return deadlines
    assert run(7) == run(7) and run(7) != run(8)


def outbound(addr, name=2):
    return ConnectionSummary(N(name), addr, True, True)


@pytest.mark.parametrize("lasted,immediate", [(61.0, True), (59.0, False)])
def test_connection_lasting_over_a_minute_retries_at_once(lasted, immediate):
    cm = maker()
    addr = "10.0.0.2:6783"
    cm.add_direct(["10.0.0.2"], now=0.0)
    cm.refresh(0.0, empty_topology(), [])
    cm.connection_established(addr, outbound=True)
    assert cm.target(addr).state is TargetState.CONNECTED
    assert cm.refresh(10.0, empty_topology(), [outbound(addr)]) == []
    cm.connection_ended(addr, True, lasted, "EOF")
    dials = cm.refresh(lasted, empty_topology(), [])
    assert (dials == [Dial(addr, True)]) is immediate
    assert cm.termination_count == 1
    if not immediate:
        assert 1.0 <= cm.next_deadline() - lasted < 3.0


@pytest.mark.parametrize("kind,counted", [(EndReason.NAME_COLLISION, 1), (EndReason.CONNECT_TO_SELF, 0)])
def test_collision_and_self_are_never_retried(kind, counted):
    cm = maker()
    addr = "10.0.0.2:6783"
    cm.add_direct(["10.0.0.2"], now=0.0)
    cm.refresh(0.0, empty_topology(), [])
    cm.connection_ended(addr, True, 1.0, "no", kind)
    assert cm.refresh(1000.0, empty_topology(), []) == [] and cm.next_deadline() is None
    assert cm.termination_count == counted
    assert cm.targets_status() == ["10.0.0.2"] and cm.targets_status(active_only=True) == []
    assert cm.connection_statuses() == [
        {"Address": addr, "Outbound": True, "State": "failed", "Info": "no, retry: never"}]
    cm.add_direct(["10.0.0.2"], now=2000.0)  # `weave connect` again revives it
    assert cm.refresh(2000.0, empty_topology(), []) == [Dial(addr, True)]


def test_connection_limit_turns_due_dial_into_failure():
    cm = maker(conn_limit=1)
    cm.add_direct(["10.0.0.2", "10.0.0.3"], now=0.0)
    existing = [outbound("10.0.0.2:6783")]
    assert cm.refresh(0.0, empty_topology(), existing) == []
    target = cm.target("10.0.0.3:6783")
    assert target.last_error == "Connection limit reached (1)"
    due = cm.next_deadline()
    assert 1.0 <= due < 3.0
    assert cm.refresh(due, empty_topology(), existing) == []  # still full: backs off again
    assert cm.next_deadline() - due >= 1.5
    assert cm.refresh(cm.next_deadline(), empty_topology(), []) == [
        Dial("10.0.0.2:6783", True), Dial("10.0.0.3:6783", True)]
    unlimited = maker(conn_limit=0)
    unlimited.add_direct(["10.0.0.3"], now=0.0)
    assert unlimited.refresh(0.0, empty_topology(), existing * 500) == [Dial("10.0.0.3:6783", True)]


def test_portless_target_skipped_while_that_ip_connected_to_us():
    cm = maker()
    cm.add_direct(["10.0.0.2", "10.0.0.3:6783"], now=0.0)
    inbound = [ConnectionSummary(N(2), "10.0.0.2:41234", False, True),
               ConnectionSummary(N(3), "10.0.0.3:41235", False, True)]
    assert cm.refresh(0.0, empty_topology(), inbound) == [Dial("10.0.0.3:6783", True)]
    assert cm.target("10.0.0.2:6783") is None
    assert cm.refresh(1.0, empty_topology(), []) == [Dial("10.0.0.2:6783", True)]
    cm.connection_failed("10.0.0.2:6783", 1.0, "refused")
    # an existing direct target is suspended, not dropped, while the inbound one lasts
    assert cm.refresh(2.0, empty_topology(), inbound) == []
    assert cm.target("10.0.0.2:6783").state is TargetState.SUSPENDED
    assert cm.next_deadline() is None
    assert cm.refresh(10.0, empty_topology(), []) == [Dial("10.0.0.2:6783", True)]


def topology_with_peer_2():
    """We are connected to 2; 2 dialled 3 and was dialled by 4; 2 also reaches us."""
    peers = empty_topology()
    peers.fetch_with_default(Peer(N(2), "p2", PeerUID(2), 1, 2, True, {
        US: ConnectionSummary(US, "10.0.0.1:6783", False, True),
        N(3): ConnectionSummary(N(3), "10.0.0.3:6783", True, True),
        N(4): ConnectionSummary(N(4), "10.0.0.4:51515", False, True),
    }))
    return peers


def test_discovery_targets_from_topology():
    ours = [outbound("10.0.0.2:6783")]
    cm = maker()
    assert cm.refresh(0.0, topology_with_peer_2(), ours) == [
        Dial("10.0.0.3:6783", False), Dial("10.0.0.4:6783", False)]
    off = maker(discovery=False)
    assert off.refresh(0.0, topology_with_peer_2(), ours) == []
    connected = maker()
    ours_too = ours + [ConnectionSummary(N(3), "10.0.0.3:36000", False, True)]
    assert connected.refresh(0.0, topology_with_peer_2(), ours_too) == [Dial("10.0.0.4:6783", False)]


def test_discovered_target_dropped_when_no_longer_wanted_direct_one_kept():
    cm = maker()
    ours = [outbound("10.0.0.2:6783")]
    cm.refresh(0.0, topology_with_peer_2(), ours)
    cm.connection_failed("10.0.0.3:6783", 0.0, "refused")
    cm.refresh(0.0, topology_with_peer_2(), ours)
    assert cm.target("10.0.0.3:6783") is not None
    cm.refresh(1.0, empty_topology(), ours)  # 2's record is gone
    assert cm.target("10.0.0.3:6783") is None


def test_forget_and_replace():
    cm = maker()
    cm.add_direct(["10.0.0.2", "10.0.0.3"], now=0.0)
    cm.refresh(0.0, empty_topology(), [])
    cm.connection_failed("10.0.0.2:6783", 0.0, "refused")
    cm.forget(["10.0.0.2"])
    assert cm.targets_status() == ["10.0.0.3"]
    cm.refresh(0.0, empty_topology(), [])
    assert cm.target("10.0.0.2:6783") is None
    cm.add_direct(["10.0.0.4"], now=0.0, replace=True)
    assert cm.targets_status() == ["10.0.0.4"]


def test_add_direct_cuts_backoff_short():
    cm = maker()
    cm.add_direct(["10.0.0.2"], now=0.0)
    cm.refresh(0.0, empty_topology(), [])
    for _ in range(6):
        cm.connection_failed("10.0.0.2:6783", 0.0, "refused")
    cm.add_direct(["10.0.0.2"], now=3.0)
    assert cm.refresh(3.0, empty_topology(), []) == [Dial("10.0.0.2:6783", True)]
    assert cm.target("10.0.0.2:6783").try_interval == INITIAL_INTERVAL


@pytest.mark.parametrize("bad", ["10.0.0.1:abc", ":6783", "a:b:c", "10.0.0.1:70000", "example.com"])
def test_invalid_direct_peers_reported(bad):
    cm = maker()
    errors = cm.add_direct([bad, "10.0.0.9"], now=0.0)
    assert len(errors) == 1 and cm.targets_status() == ["10.0.0.9"]


def test_host_names_go_through_the_given_resolver():
    cm = maker()
    assert cm.add_direct(["peer.example:6790"], now=0.0, resolve={"peer.example": "10.9.9.9"}.__getitem__) == []
    assert cm.refresh(0.0, empty_topology(), []) == [Dial("10.9.9.9:6790", True)]
    assert cm.targets_status() == ["peer.example:6790"]


def test_connection_statuses_states():
    cm = maker()
    cm.add_direct(["10.0.0.2", "10.0.0.3", "10.0.0.4"], now=0.0)
    cm.refresh(0.0, empty_topology(), [])
    cm.connection_failed("10.0.0.3:6783", 0.0, "refused")
    cm.connection_established("10.0.0.4:6783", outbound=True)
    rows = {r["Address"]: (r["State"], r["Info"]) for r in cm.connection_statuses(lambda t: f"t={t:.0f}")}
    assert rows["10.0.0.2:6783"] == ("connecting", "")
    state, info = rows["10.0.0.3:6783"]
    assert state == "failed" and info.startswith("refused, retry: t=")
    assert "10.0.0.4:6783" not in rows
    cm.refresh(0.0, empty_topology(), [outbound("10.0.0.4:6783", 4)])
    rows = {r["Address"]: (r["State"], r["Info"]) for r in cm.connection_statuses(lambda t: f"t={t:.0f}")}
    assert rows["10.0.0.3:6783"] == ("failed", f"refused, retry: t={cm.next_deadline():.0f}")
    cm.refresh(cm.next_deadline(), empty_topology(), [outbound("10.0.0.4:6783", 4)])
    rows = {r["Address"]: (r["State"], r["Info"]) for r in cm.connection_statuses()}
    assert rows["10.0.0.3:6783"] == ("retrying", "refused")
