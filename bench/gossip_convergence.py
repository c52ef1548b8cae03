"""Topology gossip convergence for N simulated peers: rounds and bytes until every peer
knows every peer's current record (with its connections).

Two engines, same algorithm: `real` runs each peer as a `Peers` topology
(services/gossip/peers.py) exchanging real gob payloads merged by the real
`apply_update` (exact, but quadratic: for small N); `model` keeps, per peer, the version
it knows of each record and sizes each message from the real gob encoding of those
records (one encoding per record, plus the stream's type definitions once per message),
which scales to 1,000 peers. `--check N` runs both on N peers and prints them side by
side. The network is simulated in rounds: what is sent in round r arrives in round r+1.
- mesh strategy (Weave's): a new connection gets our whole topology; a received update
  re-gossips only the records it improved, to 2*log2(N) random neighbours other than the
  sender (mesh's GossipNeighbourSubset; neighbours drawn uniformly here, not weighted by
  routes as mesh does). What one peer learns in a round is merged per neighbour into one
  message, as mesh's per-connection GossipSender merges pending data;
- baseline, in the same run: flooding, where improvements go to every neighbour but the
  senders, with the same merging.
The graph: a ring plus random chords, average degree `--degree` (default 32, so the
2*log2(N) fanout limit matters), all links up at round 0.

    python -m bench.gossip_convergence [--peers 100 1000] [--json]
"""
from __future__ import annotations

import argparse
import json
import math
import random

from services.gossip.peer import ConnectionSummary, LocalPeer, Peer, encode_peers
from shared.weave.peer_name import PeerName, PeerUID
from services.gossip.peers import Peers


def make_graph(n: int, rng: random.Random, degree: int) -> dict[int, set[int]]:
    adj = {i: {(i - 1) % n, (i + 1) % n} for i in range(n)}
    for _ in range(n * max(0, degree - 2) // 2):
        a, b = rng.randrange(n), rng.randrange(n)
        if a != b:
            adj[a].add(b)
            adj[b].add(a)
    return adj


def make_peers(n: int, adj: dict[int, set[int]], rng: random.Random) -> list[Peers]:
    names = [PeerName(0x0A0000000000 + i) for i in range(n)]
    uids = [PeerUID(rng.getrandbits(63) + 1) for i in range(n)]
    out = []
    for i in range(n):
        me = LocalPeer(name=names[i], nickname=f"p{i}", uid=uids[i], short_id=i % 4096, has_short_id=True)
        peers = Peers(me, random.Random(i))
        for j in sorted(adj[i]):
            peers.fetch_with_default(Peer(name=names[j], nickname=f"p{j}", uid=uids[j], short_id=j % 4096,
                                          has_short_id=True))
            me.add_connection(ConnectionSummary(names[j], f"10.0.{j // 250}.{j % 250 + 1}:6783", i < j, True))
            me.version += 1  # established
        out.append(peers)
    return out


def converged(peers: list[Peers], truth: dict[PeerName, int]) -> bool:
    for p in peers:
        if len(p.by_name) != len(truth):
            return False
        for name, version in truth.items():
            rec = p.by_name.get(name)
            if rec is None or rec.version != version:
                return False
    return True


def simulate(n: int, strategy: str, degree: int, seed: int = 1) -> dict:
    rng = random.Random(seed)
    adj = make_graph(n, rng, degree)
    peers = make_peers(n, adj, rng)
    truth = {p.ourself.name: p.ourself.version for p in peers}
    fanout = max(1, int(2 * math.log2(n)))
    # round 0: every new connection gets the sender's whole topology (sendAllGossipDown)
    inflight = [(i, j, peers[i].encode()) for i in range(n) for j in adj[i]]
    rounds = messages = total_bytes = 0
    while inflight and not converged(peers, truth):
        rounds += 1
        pending: dict[tuple[int, int], set[PeerName]] = {}  # (sender, neighbour) -> names
        for src, dst, payload in inflight:
            messages += 1
            total_bytes += len(payload)
            change = peers[dst].apply_update(payload)
            if not change.improved:
                continue
            others = sorted(adj[dst] - {src})
            targets = others if strategy == "flood" else rng.sample(others, min(fanout, len(others)))
            for t in targets:
                pending.setdefault((dst, t), set()).update(change.improved)
        inflight = [(a, b, peers[a].encode(names)) for (a, b), names in pending.items()]
    return {"peers": n, "strategy": strategy, "rounds": rounds, "messages": messages, "bytes": total_bytes,
            "converged": converged(peers, truth), "engine": "real"}


def record_sizes(peers: list[Peers]) -> tuple[int, dict[PeerName, int]]:
    """(bytes of the type definitions each message carries, bytes of each record), from
    real encodings: a record's size is what it adds to a stream that already has them."""
    p0 = peers[0]
    a, b = p0.ourself.name, next(n for n in p0.by_name if n != p0.ourself.name)
    one, two = len(p0.encode([a])), len(p0.encode([a, b]))
    overhead = one - (two - len(p0.encode([b])))  # a's record costs two - len(b alone)
    return overhead, {p.ourself.name: len(p.encode([p.ourself.name])) - overhead for p in peers}


def bare_sizes(peers: list[Peers], overhead: int) -> dict[PeerName, int]:
    """Bytes of each version-0 record: what a handshake tells (no connections)."""
    return {p.ourself.name: len(encode_peers([Peer(name=p.ourself.name, nickname=p.ourself.nickname,
                                                   uid=p.ourself.uid, short_id=p.ourself.short_id,
                                                   has_short_id=True)])) - overhead for p in peers}


def simulate_model(n: int, strategy: str, degree: int, seed: int = 1) -> dict:
    rng = random.Random(seed)
    adj = make_graph(n, rng, degree)
    peers = make_peers(n, adj, rng)
    names = [p.ourself.name for p in peers]
    truth = {p.ourself.name: p.ourself.version for p in peers}
    overhead, size = record_sizes(peers)
    bare = bare_sizes(peers, overhead)
    known = [{names[i]: truth[names[i]], **{names[j]: 0 for j in adj[i]}} for i in range(n)]
    fanout = max(1, int(2 * math.log2(n)))
    inflight = [(i, j, dict(known[i])) for i in range(n) for j in adj[i]]
    rounds = messages = total_bytes = 0
    target = sum(truth.values())

    def done() -> bool:
        return all(len(k) == n and sum(k.values()) == target for k in known)

    while inflight and not done():
        rounds += 1
        pending: dict[tuple[int, int], set[PeerName]] = {}
        for src, dst, records in inflight:
            messages += 1
            total_bytes += overhead + sum(size[name] if v else bare[name] for name, v in records.items())
            mine = known[dst]
            improved = [name for name, v in records.items() if v > mine.get(name, -1)]
            if not improved:
                continue
            for name in improved:
                mine[name] = records[name]
            others = sorted(adj[dst] - {src})
            targets = others if strategy == "flood" else rng.sample(others, min(fanout, len(others)))
            for t in targets:
                pending.setdefault((dst, t), set()).update(improved)
        inflight = [(a, b, {name: known[a][name] for name in ns}) for (a, b), ns in pending.items()]
    return {"peers": n, "strategy": strategy, "engine": "model", "rounds": rounds, "messages": messages,
            "bytes": total_bytes, "converged": done()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--peers", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--degree", type=int, default=32)
    parser.add_argument("--check", type=int, default=0, help="also run the real engine on this many peers")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = []
    if args.check:
        real, model = simulate(args.check, "mesh", args.degree), simulate_model(args.check, "mesh", args.degree)
        print(f"check on {args.check} peers: real engine {real['rounds']} rounds {real['messages']} messages "
              f"{real['bytes']} bytes; model {model['rounds']} rounds {model['messages']} messages "
              f"{model['bytes']} bytes")
    for n in args.peers:
        mesh, flood = simulate_model(n, "mesh", args.degree), simulate_model(n, "flood", args.degree)
        results.append({"mesh": mesh, "flood": flood,
                        "bytes_ratio": round(mesh["bytes"] / flood["bytes"], 3),
                        "rounds_ratio": round(mesh["rounds"] / flood["rounds"], 2)})
    if args.json:
        print(json.dumps(results))
        return
    print(f"topology gossip, average degree {args.degree}, model engine")
    print(f"{'peers':>6} {'strategy':>8} {'rounds':>6} {'messages':>9} {'bytes':>12} {'converged':>9}")
    for r in results:
        for s in ("mesh", "flood"):
            x = r[s]
            print(f"{x['peers']:>6} {s:>8} {x['rounds']:>6} {x['messages']:>9} {x['bytes']:>12} {str(x['converged']):>9}")
        print(f"{'':>6} mesh/flood: bytes {r['bytes_ratio']:.3f}, rounds {r['rounds_ratio']:.2f}")


if __name__ == "__main__":
    main()
