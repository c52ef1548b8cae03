"""Replay of scenario 1 (mesh-ipam capture) through an allocator playing h1: it is fed
what h2 and h3 sent h1 plus h1's one allocation, and must say what h1 said and end
with h1's /report IPAM section, byte for byte in JSON terms."""
import json

from shared.weave.peer_name import PeerName
from services.ipam import codec, status
from services.ipam.actions import Broadcast, Reply, SendUnicast
from services.ipam.address import format_ip, parse_subnet
from services.ipam.allocator import Allocator
from services.ipam.config import AllocatorConfig
from services.ipam.ring import Ring
from shared import gob
from tests.reference import capture, reference_dir

H1, H2, H3 = (PeerName(0xAA0000000001 + i) for i in range(3))
H1_UID = 8215739316142177907  # from the capture README / features map
ALLOCATE_C1_AT = 3.393  # `curl -X POST /ip/c1` on h1


def ipam_messages():
    msgs = [m for m in capture("mesh-ipam")["tcp_messages"] if m.get("channel") == "IPallocation"]
    return sorted(msgs, key=lambda m: m["t"])


def payload_of(m) -> bytes:
    return gob.decode_all(bytes.fromhex(m["hex"])[1:])[-1]


def replay():
    t0 = capture("mesh-ipam")["capture_start_epoch"]
    h1 = Allocator(AllocatorConfig(H1, H1_UID, parse_subnet("10.32.0.0/12"), "h1", quorum=3 // 2 + 1))
    h1.set_peers([H2, H3], now=t0)
    actions = h1.start(now=t0)
    inputs = [(ALLOCATE_C1_AT, None)] + [(m["t"], m) for m in ipam_messages() if m["src_peer"] != str(H1)]
    for t, m in sorted(inputs, key=lambda x: x[0]):
        now = t0 + t
        if m is None:
            actions += h1.allocate("c1-request", "c1", now=now)
            continue
        sender, payload = PeerName.parse(m["src_peer"]), payload_of(m)
        if m["tag"] == 4:
            actions += h1.on_gossip(payload, now=now)
        elif m["tag"] == 6:
            actions += h1.on_gossip_broadcast(sender, payload, now=now)
        else:
            actions += h1.on_gossip_unicast(sender, payload, now=now)
    return h1, actions


def captured_from_h1(tag):
    """h1's own messages (each broadcast once, though Go sends it on both links)."""
    out = []
    for m in ipam_messages():
        if m["src_peer"] == str(H1) and m["tag"] == tag:
            value = codec.decode_unicast(payload_of(m)) if tag == 5 else codec.decode_gossip(payload_of(m))
            item = (m.get("dst_peer"), value)
            if not out or out[-1] != item:
                out.append(item)
    return out


def test_h1_says_what_go_said():
    _, actions = replay()
    broadcasts = [(None, a.state) for a in actions if isinstance(a, Broadcast)]
    unicasts = [(str(a.dest), a.message) for a in actions if isinstance(a, SendUnicast)]
    assert broadcasts == captured_from_h1(6)  # propose, accept, ring, ring after the donation
    assert unicasts == captured_from_h1(5)  # RingUpdate to h3 (it asked late), donation to h2


def test_h1_allocates_10_32_0_1():
    _, actions = replay()
    replies = [a for a in actions if isinstance(a, Reply)]
    assert [(r.request_id, str(r.result), r.error) for r in replies] == [("c1-request", "10.32.0.1/12", None)]


def test_h1_ends_with_the_captured_report():
    h1, _ = replay()
    with open(reference_dir() / "captures" / "mesh-ipam.report-h1.json") as f:
        report = json.load(f)
    h1.set_peers([H2, H3], now=0)
    assert status.report(h1) == report["IPAM"]
    assert status.status(h1) == "ready"


def test_merging_every_captured_ring_gives_the_report_entries():
    ring = Ring(0x0A200000, 0x0A300000, PeerName(0x0200000000FF))  # an onlooker owning nothing
    for m in ipam_messages():
        payload = payload_of(m)
        message = codec.decode_unicast(payload) if m["tag"] == 5 else codec.decode_gossip(payload)
        state = message.state if m["tag"] == 5 and hasattr(message, "state") else message
        if getattr(state, "ring", None) is not None:
            ring.merge(state.ring)
    with open(reference_dir() / "captures" / "mesh-ipam.report-h1.json") as f:
        entries = json.load(f)["IPAM"]["Entries"]
    got = [{"Token": format_ip(r.start), "Size": r.size, "Peer": str(p), "Version": v}
           for p, r, v in ring.all_range_info()]
    assert got == [{k: e[k] for k in ("Token", "Size", "Peer", "Version")} for e in entries]


def test_fresh_h1_gossips_what_go_gossiped_on_connecting():
    first = next(m for m in ipam_messages() if m["src_peer"] == str(H1))
    t0 = capture("mesh-ipam")["capture_start_epoch"]
    h1 = Allocator(AllocatorConfig(H1, H1_UID, parse_subnet("10.32.0.0/12"), "h1", quorum=2))
    h1.start(now=t0)
    assert codec.decode_gossip(h1.gossip(t0 + first["t"])) == codec.decode_gossip(payload_of(first))
