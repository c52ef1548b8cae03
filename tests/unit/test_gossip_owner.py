"""The owner-side gossip library: the sans-I/O core (shared/gossip_owner.py: one
definition of a new neighbour, catch-up, pull, the periodic round), table-driven on a
manual clock; then its shell (shared/mesh_channel.OwnedChannel) over the in-memory
bus against a stand-in gossip service."""
from __future__ import annotations

import asyncio

import pytest
from pydantic import ValidationError

from shared import subjects
from shared.bus import BusMsg, MemoryBroker, MemoryBus
from shared.gossip_owner import Dropped, GossipOwnerCore, HandToOwner, SendPull, SendState, neighbours
from shared.mesh_channel import OwnedChannel
from shared.schemas.base import Message
from shared.schemas.mesh import MeshReceive, MeshSend, PeerInfo, PeersRequest, TopologyEvent
from shared.weave.peer_name import UNKNOWN_PEER_NAME, PeerName

US, A, B, C = "aa:00:00:00:00:01", "aa:00:00:00:00:02", "aa:00:00:00:00:03", "aa:00:00:00:00:04"
PULL = b"\x02"


def peer(name: str, uid: int = 1, reachable: bool = True, address: str = "192.168.77.9") -> PeerInfo:
    return PeerInfo(name=name, nickname=name[-2:], uid=uid, short_id=1, reachable=reachable, address=address)


def topo(*peers: PeerInfo) -> TopologyEvent:
    return TopologyEvent(ourself=US, peers=(peer(US, address=""), *peers))


def n(name: str) -> PeerName:
    return PeerName.parse(name)


# -- the one definition of a neighbour -------------------------------------------------------
@pytest.mark.parametrize("info, is_neighbour", [
    (peer(A), True),  # reachable, directly connected
    (peer(A, reachable=False), False),  # a connection, no established route (yet)
    (peer(A, address=""), False),  # reachable only through others: gossip down cannot reach it
    (peer(A, reachable=False, address=""), False),  # known from topology only
])
def test_a_neighbour_is_reachable_and_directly_connected(info, is_neighbour):
    assert neighbours(topo(info)) == ({(n(A), 1)} if is_neighbour else set())


def test_we_are_never_our_own_neighbour():
    event = TopologyEvent(ourself=US, peers=(peer(US),))  # even with an address
    assert neighbours(event) == set()


# -- catch-up ----------------------------------------------------------------------------
def test_every_neighbour_is_new_at_start_then_only_what_changes():
    core = GossipOwnerCore(30.0, now=0.0)
    assert core.on_topology(topo(peer(B), peer(A), peer(C, address=""))) == [
        SendState("gossip", n(A)), SendState("gossip", n(B))]  # name order, direct neighbours only
    assert core.on_topology(topo(peer(B), peer(A), peer(C, address=""))) == []
    assert core.known_neighbours() == [n(A), n(B)]


@pytest.mark.parametrize("second, caught_up", [
    ((peer(A, uid=2), peer(B)), [A]),  # A's router restarted: a new UID, it lost what it knew
    ((peer(A), peer(B), peer(C)), [C]),  # a new peer
    ((peer(A), peer(B, reachable=False)), []),  # B unreachable: nothing to send it
    ((peer(A), peer(B, address="")), []),  # our connection to B went; it is reached through A
    ((peer(A),), []),  # B gone
])
def test_what_a_second_topology_catches_up(second, caught_up):
    core = GossipOwnerCore(30.0, now=0.0)
    core.on_topology(topo(peer(A), peer(B)))
    assert core.on_topology(topo(*second)) == [SendState("gossip", n(p)) for p in caught_up]


def test_a_neighbour_that_left_and_came_back_is_new_again():
    core = GossipOwnerCore(30.0, now=0.0)
    core.on_topology(topo(peer(A)))
    assert core.on_topology(topo(peer(A, reachable=False))) == []
    assert core.on_topology(topo(peer(A))) == [SendState("gossip", n(A))]


def test_with_a_pull_each_new_neighbour_is_also_asked_for_its_state():
    core = GossipOwnerCore(30.0, now=0.0, pull=PULL)
    assert core.on_topology(topo(peer(B), peer(A))) == [
        SendState("gossip", n(A)), SendPull(n(A)), SendState("gossip", n(B)), SendPull(n(B))]


# -- deliveries ------------------------------------------------------------------------------
@pytest.mark.parametrize("pull, kind, src, payload, expected", [
    (None, "gossip", "00:00:00:00:00:00", b"x", [HandToOwner("gossip", UNKNOWN_PEER_NAME, b"x")]),
    (None, "broadcast", A, b"x", [HandToOwner("broadcast", n(A), b"x")]),
    (None, "unicast", A, b"x", [HandToOwner("unicast", n(A), b"x")]),
    (None, "unicast", A, PULL, [HandToOwner("unicast", n(A), PULL)]),  # no pulls on this channel
    (PULL, "unicast", A, PULL, [SendState("unicast", n(A))]),  # answered, not handed on
    (PULL, "unicast", A, b"x", [HandToOwner("unicast", n(A), b"x")]),
    (PULL, "broadcast", A, PULL, Dropped("a pull by broadcast: pulls come by unicast")),
    (PULL, "gossip", "00:00:00:00:00:00", PULL, Dropped("a pull by gossip: pulls come by unicast")),
])
def test_deliveries(pull, kind, src, payload, expected):
    core = GossipOwnerCore(30.0, now=0.0, pull=pull)
    assert core.on_receive(MeshReceive(kind=kind, src=src, payload=payload)) == expected


def test_a_delivery_with_an_unreadable_sender_never_reaches_the_core():
    for payload in (b"x", PULL):
        with pytest.raises(ValidationError, match="not-a-peer"):
            MeshReceive(kind="unicast", src="not-a-peer", payload=payload)


# -- the periodic round -------------------------------------------------------------------------
def test_the_periodic_round_comes_every_interval_from_start():
    core = GossipOwnerCore(5.0, now=100.0)
    assert core.next_deadline() == 105.0
    assert core.tick(104.9) == []
    assert core.tick(105.0) == [SendState("gossip")]
    assert core.tick(105.1) == [] and core.next_deadline() == 110.0
    assert core.tick(117.0) == [SendState("gossip")] and core.next_deadline() == 122.0  # late: one round


def test_the_interval_must_be_positive():
    with pytest.raises(ValueError, match="must be positive"):
        GossipOwnerCore(0.0, now=0.0)


# -- the shell ---------------------------------------------------------------------------------
class Owner:
    """Remembers what it was handed; its state is two payloads."""

    def __init__(self) -> None:
        self.got: list[tuple] = []
        self.state = [b"s1", b"s2"]

    def gossip(self) -> list[bytes]:
        return list(self.state)

    async def on_gossip(self, payload):
        self.got.append(("gossip", payload))

    async def on_gossip_broadcast(self, src, payload):
        self.got.append(("broadcast", str(src), payload))

    async def on_gossip_unicast(self, src, payload):
        self.got.append(("unicast", str(src), payload))

    async def on_topology(self, event):
        self.got.append(("topology", tuple(str(p.name) for p in event.peers)))


async def until(cond, timeout: float = 5.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not cond():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.01)


@pytest.fixture
async def wired():
    """An OwnedChannel on channel "c" and a stand-in gossip service on the same bus."""
    broker = MemoryBroker()
    gossip, bus = MemoryBus(broker, "gossip"), MemoryBus(broker, "owner")
    sent: list[MeshSend] = []

    async def on_send(msg: BusMsg) -> None:
        sent.append(MeshSend.model_validate_json(msg.data))

    async def peers(_: PeersRequest) -> TopologyEvent:
        return topo(peer(A))
    await gossip.subscribe(subjects.mesh_out("c"), on_send)
    await gossip.serve(subjects.request("gossip", "peers"), PeersRequest, peers)
    owner = Owner()
    channel = OwnedChannel(bus, "c", owner, gossip_interval_s=0.2, pull=PULL)
    channel.broadcast(b"before start")  # queued, leaves once started
    await channel.start()
    yield gossip, channel, owner, sent
    await channel.stop()
    await bus.close()
    await gossip.close()


def shapes(sent):
    return [(s.kind, None if s.dst is None else str(s.dst), s.payload) for s in sent]


async def test_the_shell_catches_up_at_start_answers_pulls_and_hands_on_the_rest(wired):
    gossip, channel, owner, sent = wired
    await until(lambda: len(sent) >= 4)
    assert shapes(sent[:4]) == [("broadcast", None, b"before start"), ("gossip", A, b"s1"), ("gossip", A, b"s2"),
                                ("unicast", A, PULL)]
    assert owner.got == [("topology", (US, A))]
    sent.clear()
    for kind, src, payload in (("unicast", B, PULL), ("broadcast", B, b"news"), ("gossip", "00:00:00:00:00:00", b"g"),
                               ("unicast", B, b"direct")):
        await gossip.publish(subjects.mesh_in("c"), MeshReceive(kind=kind, src=src, payload=payload))
    await until(lambda: len(owner.got) == 4)
    assert owner.got[1:] == [("broadcast", B, b"news"), ("gossip", b"g"), ("unicast", B, b"direct")]
    assert shapes(sent[:2]) == [("unicast", B, b"s1"), ("unicast", B, b"s2")]
    await gossip.publish(subjects.event("topology"), topo(peer(A), peer(B)))
    await until(lambda: ("unicast", B, PULL) in shapes(sent))
    assert ("gossip", B, b"s1") in shapes(sent) and ("gossip", A, b"s1") not in shapes(sent)


async def test_the_shell_drops_a_delivery_with_an_unreadable_sender(wired, caplog):
    class LooseReceive(Message):  # what a broken gossip service could publish
        kind: str
        src: str
        payload: bytes

    gossip, channel, owner, sent = wired
    await until(lambda: owner.got)
    await gossip.publish(subjects.mesh_in("c"), LooseReceive(kind="unicast", src="not-a-peer", payload=b"x"))
    await gossip.publish(subjects.mesh_in("c"), MeshReceive(kind="unicast", src=B, payload=b"after"))
    await until(lambda: len(owner.got) == 2)
    assert owner.got[1] == ("unicast", B, b"after")
    assert "c: malformed delivery from the gossip service" in caplog.text and "not-a-peer" in caplog.text


async def test_the_shell_gossips_every_interval_and_on_demand(wired):
    _, channel, owner, sent = wired

    def rounds():
        return [s for s in sent if s.kind == "gossip" and s.dst is None]
    await until(lambda: len(rounds()) >= 4)  # 0.2 s interval: two rounds of two payloads
    assert [s.payload for s in rounds()[:4]] == [b"s1", b"s2", b"s1", b"s2"]
    owner.state = [b"now"]
    sent.clear()
    channel.gossip_round()
    await until(lambda: rounds())
    assert rounds()[0].payload == b"now"


async def test_a_full_outbox_drops_and_says_so(caplog):
    broker = MemoryBroker()
    channel = OwnedChannel(MemoryBus(broker, "owner"), "c", Owner(), gossip_interval_s=30.0, outbox_limit=2)
    for payload in (b"1", b"2", b"3"):
        channel.broadcast(payload)  # not started: nothing drains the outbox
    assert "c: dropping a broadcast for the mesh: outbox full" in caplog.text
