"""Many mesh cores in one process: topology gossip through the real cores until quiet.

The harness plays the asyncio shell of each host: it turns connection-maker dials
into connections (both ends at once, with mesh's duplicate tie-break), runs the
add / establish / delete steps mesh runs, and carries every message a core emits to
the core at the other end of that connection. Time is a manual clock; nothing sleeps.
"""
from __future__ import annotations

import itertools
import random
from collections import Counter, deque

import pytest

from services.gossip.connection_maker import ConnectionMaker
from services.gossip.gossip_channel import GOSSIP_UNICAST, GossipChannels
from services.gossip.peer import ConnectionSummary, LocalPeer, Peer, TieBreak, break_tie
from shared.weave.peer_name import PeerName, PeerUID
from services.gossip.peers import TOPOLOGY_CHANNEL, Peers, TopologyGossiper
from services.gossip.routes import Routes, peer_routes
from services.gossip.surrogate_gossiper import GOSSIP_INTERVAL, SurrogateGossipData

MAX_MESSAGES = 500_000


class Counting:
    """Owner of channel "bcast": counts what arrives and passes broadcasts on."""

    def __init__(self) -> None:
        self.got: Counter = Counter()

    def on_gossip_unicast(self, src, payload, now):
        self.got[("unicast", src, payload)] += 1

    def on_gossip_broadcast(self, src, payload, now):
        self.got[(src, payload)] += 1
        return SurrogateGossipData((payload,))

    def gossip(self, now):
        return None

    def on_gossip(self, payload, now):
        return None


class Host:
    def __init__(self, index: int, seed: int, discovery: bool, short_id: int | None = None) -> None:
        rng = random.Random(seed)
        self.ip = f"10.1.{index // 250}.{index % 250 + 1}"
        # names deliberately not in index order, so BFS ordering matters
        self.name = PeerName(0xAA0000000000 | (index * 7919) % 65521)
        sid = rng.randrange(4096) if short_id is None else short_id
        self.ourself = LocalPeer(self.name, f"h{index}", PeerUID(rng.getrandbits(64) | 1), 0, sid, True)
        self.peers = Peers(self.ourself, rng)
        self.routes = Routes(self.peers)
        self.channels = GossipChannels(self.peers, self.routes, rng)
        self.topology = TopologyGossiper(self.peers, self.routes, self._on_topology_change)
        self.channels.register(TOPOLOGY_CHANNEL, self.topology)
        self.counting = Counting()
        self.channels.register("bcast", self.counting)
        self.cm = ConnectionMaker(self.name, rng, discovery=discovery)

    def _on_topology_change(self, change) -> None:
        if change.local_modified:
            self.gossip_ourself()

    def gossip_ourself(self, *also: PeerName) -> None:
        data = self.topology.data({self.name, *also})
        self.channels.gossip_neighbour_subset(TOPOLOGY_CHANNEL, data)

    def features(self) -> Peer:
        """What our side of the handshake tells the remote about us."""
        return Peer(self.name, self.ourself.nickname, self.ourself.uid, 0, self.ourself.short_id, True)

    def add_connection(self, remote: "Host", address: str, outbound: bool, accept_new: bool, now: float) -> str | None:
        """mesh registerRemote + handleAddConnection; an error text if refused."""
        if accept_new:
            self.peers.fetch_with_default(remote.features())
        elif self.peers.fetch_and_add_ref(remote.name) is None:
            return f"Found unknown remote name: {remote.name} at {address}"
        self.routes.ensure_recalculated()
        is_new_peer = self.routes.unicast(remote.name) is None
        self.ourself.add_connection(ConnectionSummary(remote.name, address, outbound, False))
        self.cm.connection_established(address, outbound)
        if is_new_peer:
            self.channels.send_all_gossip_down(remote.name, now)
        self.routes.request_recalculate()
        self.gossip_ourself(remote.name)
        return None

    def establish(self, remote: PeerName) -> None:
        assert self.ourself.connection_established(remote)
        self.routes.request_recalculate()
        self.gossip_ourself()

    def drop_connection(self, remote: PeerName, now: float, reason: str) -> None:
        """mesh teardown: dereference, delete (GC first), then tell the connection maker."""
        conn = self.ourself.connections[remote]
        self.peers.dereference(remote)
        self.ourself.delete_connection(remote)
        self.channels.connection_closed(remote)
        self.peers.garbage_collect()
        self.routes.request_recalculate()
        self.gossip_ourself()
        self.cm.connection_ended(conn.remote_tcp_addr, conn.outbound, now, reason)


class Cluster:
    def __init__(self, n: int, seed: int, discovery: bool = False, extra_edges: int = 8,
                 same_short_id: int | None = None) -> None:
        self.rng = random.Random(seed)
        self.hosts = [Host(i, seed * 1000 + i, discovery,
                           same_short_id if same_short_id is not None and i < 2 else None)
                      for i in range(n)]
        self.by_ip = {h.ip: h for h in self.hosts}
        self.by_name = {h.name: h for h in self.hosts}
        self.now = 0.0
        self.blocked: set[frozenset[str]] = set()
        self.queue: deque = deque()
        self.ports = itertools.count(40000)
        self.conn_uids: dict[frozenset, int] = {}
        self.delivered = 0
        self.rounds = 0
        self.direct_edges = self._direct_edges(n, extra_edges)
        for a, b in self.direct_edges:
            dialer, other = self.rng.sample([self.hosts[a], self.hosts[b]], 2)
            assert dialer.cm.add_direct([other.ip], self.now) == []

    def _direct_edges(self, n: int, extra: int) -> set[tuple[int, int]]:
        """A random spanning tree plus `extra` random edges: `weave launch <peers>`."""
        edges = {(self.rng.randrange(i), i) for i in range(1, n)}
        while len(edges) < n - 1 + extra:
            a, b = sorted(self.rng.sample(range(n), 2))
            edges.add((a, b))
        return edges

    # --- the network ------------------------------------------------------------------

    def dial(self, host: Host, address: str, accept_new: bool) -> None:
        ip, port = address.rsplit(":", 1)
        remote = self.by_ip.get(ip)
        if remote is None or port != "6783" or frozenset((host.ip, ip)) in self.blocked:
            host.cm.connection_failed(address, self.now, "connect: connection refused")
            return
        pair, uid = frozenset((host.name, remote.name)), self.rng.getrandbits(64)
        if pair in self.conn_uids:  # both ends see the duplicate and agree (same uid)
            verdict = break_tie(uid, self.conn_uids[pair])
            if verdict is not TieBreak.LOST:
                self.close(host, remote, "Multiple connections")
            if verdict is not TieBreak.WON:
                host.cm.connection_ended(address, True, self.now, "Multiple connections")
                return
        error = host.add_connection(remote, address, True, accept_new, self.now)
        if error is not None:
            host.cm.connection_ended(address, True, self.now, error)
            return
        remote.add_connection(host, f"{host.ip}:{next(self.ports)}", False, True, self.now)
        self.conn_uids[pair] = uid
        host.establish(remote.name)
        remote.establish(host.name)

    def close(self, a: Host, b: Host, reason: str) -> None:
        del self.conn_uids[frozenset((a.name, b.name))]
        a.drop_connection(b.name, self.now, reason)
        b.drop_connection(a.name, self.now, reason)

    def partition(self, group: list[Host]) -> None:
        inside = {h.ip for h in group}
        self.blocked = {frozenset((a.ip, b.ip)) for a in self.hosts for b in self.hosts
                        if (a.ip in inside) != (b.ip in inside)}
        for pair in list(self.conn_uids):
            a, b = (self.by_name[n] for n in pair)
            if frozenset((a.ip, b.ip)) in self.blocked:
                self.close(a, b, "partition")

    def pump(self) -> None:
        """Deliver every message, and whatever it causes, until no core has anything."""
        while True:
            if not self.queue:
                for host in self.hosts:
                    self.queue.extend((host, send) for send in host.channels.flush())
                if not self.queue:
                    return
            src, send = self.queue.popleft()
            dst = self.by_name[send.to]
            if src.name not in dst.ourself.connections:
                continue  # the connection went away meanwhile
            self.delivered += 1
            assert self.delivered < MAX_MESSAGES, "gossip does not quiesce"
            relays = dst.channels.handle(send.tag, send.body, self.now)
            self.queue.extend((dst, relay) for relay in relays)

    def refresh_all(self) -> None:
        for host in self.hosts:
            conns = list(host.ourself.connections.values())
            for dial in host.cm.refresh(self.now, host.peers, conns):
                self.dial(host, dial.address, dial.accept_new_peer)

    def run_until(self, done, max_time: float) -> None:
        """Advance the clock event by event (retries, 30 s gossip rounds) until `done()`."""
        self.refresh_all()
        self.pump()
        next_round = self.now + GOSSIP_INTERVAL
        while not done():
            deadlines = [d for h in self.hosts if (d := h.cm.next_deadline()) is not None]
            self.now = max(self.now, min(deadlines + [next_round]))
            assert self.now <= max_time, "mesh did not converge"
            if self.now >= next_round:
                for host in self.hosts:
                    host.channels.send_all_gossip(self.now)
                next_round += GOSSIP_INTERVAL
            self.refresh_all()
            self.pump()

    # --- what is true -------------------------------------------------------------------

    def truth(self) -> dict[PeerName, LocalPeer]:
        return {h.name: h.ourself for h in self.hosts}

    def components(self) -> list[set[PeerName]]:
        truth = self.truth()
        seen: set[PeerName] = set()
        out = []
        for name in sorted(truth):
            if name not in seen:
                comp = set(peer_routes(truth, name, symmetric=True)[1])
                seen |= comp
                out.append(comp)
        return out

    def views_agree(self) -> bool:
        """Every host holds exactly its component, each record equal to the real one."""
        truth = self.truth()
        for comp in self.components():
            for name in comp:
                host = self.by_name[name]
                if host.peers.names() != comp:
                    return False
                for other in comp - {name}:
                    rec, real = host.peers.fetch(other), truth[other]
                    if (rec.version, rec.uid, rec.short_id, rec.connections) != \
                            (real.version, real.uid, real.short_id, real.connections):
                        return False
        return True

    def connected(self) -> bool:
        return len(self.components()) == 1

    # --- checks -------------------------------------------------------------------------

    def check_routes(self) -> None:
        truth = self.truth()
        for host in self.hosts:
            host.routes.recalculate()
            for symmetric in (True, False):
                expected = peer_routes(truth, host.name, symmetric)[1]
                assert host.routes.unicast_table(symmetric) == expected
        for comp in self.components():
            for a, b in itertools.permutations(comp, 2):
                at, hops = a, 0
                while at != b:  # follow each host's own next hop: no loops, no dead ends
                    at = self.by_name[at].routes.unicast(b)
                    hops += 1
                    assert at is not None and hops < len(comp)

    def check_broadcasts(self) -> None:
        """A gossip broadcast from each source reaches every peer of its component once;
        so does a data-plane broadcast forwarded along `broadcast(src)`."""
        self.rounds += 1
        for source in self.hosts:
            payload = f"round {self.rounds} from {source.name}".encode()
            source.channels.gossip_broadcast("bcast", SurrogateGossipData((payload,)))
            self.pump()
            comp = next(c for c in self.components() if source.name in c)
            for host in self.hosts:
                want = 1 if host.name in comp and host is not source else 0
                assert host.counting.got[(source.name, payload)] == want
            frames = Counter()
            todo = [source.name]
            while todo:
                at = todo.pop()
                for hop in self.by_name[at].routes.broadcast(source.name):
                    frames[hop] += 1
                    todo.append(hop)
            assert frames == Counter({n: 1 for n in comp - {source.name}})

    def check_unicasts(self) -> None:
        for source in self.hosts:
            comp = next(c for c in self.components() if source.name in c)
            dst = self.rng.choice(sorted(comp - {source.name}))
            payload = f"hello {self.now}".encode()
            for send in source.channels.gossip_unicast("bcast", dst, payload):
                assert send.tag == GOSSIP_UNICAST
                self.queue.append((source, send))
            self.pump()
            assert self.by_name[dst].counting.got[("unicast", source.name, payload)] == 1


@pytest.mark.parametrize("seed", [1, 2])
def test_random_mesh_converges_and_partition_heals(seed):
    cluster = Cluster(22, seed, same_short_id=77)
    cluster.run_until(lambda: len(cluster.conn_uids) == len(cluster.direct_edges) and cluster.views_agree(),
                      max_time=600)
    assert cluster.connected()
    assert len({h.ourself.short_id for h in cluster.hosts}) == 22  # the collision resolved
    cluster.check_routes()
    cluster.check_broadcasts()
    cluster.check_unicasts()

    hosts = list(cluster.hosts)
    cluster.rng.shuffle(hosts)
    left = hosts[:11]
    cluster.now += 120  # connections lasted over a minute: first retry is immediate
    cluster.partition(left)
    cluster.run_until(cluster.views_agree, max_time=cluster.now + 600)
    for comp in cluster.components():
        assert all(h.peers.names() == comp for h in (cluster.by_name[n] for n in comp))
        assert comp <= {h.name for h in left} or not comp & {h.name for h in left}
    cluster.check_routes()
    cluster.check_broadcasts()

    assert len(cluster.components()) > 1
    split_at = cluster.now  # stay split for 15 min: retries keep failing, backoff grows
    cluster.run_until(lambda: cluster.now >= split_at + 900, max_time=split_at + 1000)
    assert cluster.views_agree() and len(cluster.components()) > 1
    cluster.blocked = set()  # every direct target is retried (with backoff) and reconnects
    restored = len(cluster.direct_edges)
    cluster.run_until(lambda: len(cluster.conn_uids) == restored and cluster.views_agree(),
                      max_time=cluster.now + 3600)
    assert cluster.connected() and all(len(h.peers) == 22 for h in cluster.hosts)
    cluster.check_routes()
    cluster.check_broadcasts()
    cluster.check_unicasts()


def test_discovery_builds_a_full_mesh():
    cluster = Cluster(10, 3, discovery=True, extra_edges=0)
    cluster.run_until(lambda: cluster.views_agree() and all(
        len(h.ourself.connections) == 9 for h in cluster.hosts), max_time=1200)
    assert cluster.connected()
    cluster.check_routes()
    cluster.check_broadcasts()
