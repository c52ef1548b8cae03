import pytest
from pydantic import ValidationError

from shared.schemas import ErrorReply, HealthReply, Ok, RestartRequest, parse_reply


def test_messages_are_frozen_and_strict():
    msg = RestartRequest(service="dns")
    with pytest.raises(ValidationError):
        msg.service = "ipam"
    with pytest.raises(ValidationError, match="extra"):
        RestartRequest(service="dns", colour="blue")


def test_missing_field_is_named():
    with pytest.raises(ValidationError) as exc:
        HealthReply.model_validate_json(b'{"service": "dns", "pid": 1, "healthy": true}')
    assert "uptime_s" in str(exc.value)


def test_unknown_version_rejected():
    with pytest.raises(ValidationError):
        Ok.model_validate({"version": 2})


def test_parse_reply_tells_errors_from_replies():
    err = parse_reply(ErrorReply(code="not_found", description="no such container").model_dump_json().encode(), Ok)
    assert isinstance(err, ErrorReply) and err.code == "not_found"
    assert isinstance(parse_reply(Ok().model_dump_json().encode(), Ok), Ok)


def test_parse_reply_rejects_garbage():
    with pytest.raises(ValidationError):
        parse_reply(b"not json", Ok)


def test_peer_names_are_peer_names_in_memory_and_mac_text_on_the_wire():
    import json

    from shared.schemas.mesh import MeshSend, PeerInfo, TopologyEvent
    from shared.weave.peer_name import PeerName

    h1, h2 = "aa:00:00:00:00:01", "aa:00:00:00:00:02"
    event = TopologyEvent(ourself=h1, peers=(PeerInfo(name=PeerName(0xAA0000000002), nickname="h2", uid=1, short_id=2,
                                                      reachable=True),),
                          removed=("AA:00:00:00:00:09",), unicast={h2: h2}, broadcast={"aa::1": (h2,)})
    assert all(type(p) is PeerName for p in (event.ourself, event.peers[0].name, *event.removed, *event.unicast,
                                             *event.unicast.values(), *event.broadcast, *event.broadcast[PeerName(
                                                 0xAA0000000001)]))
    wire = json.loads(event.model_dump_json())
    assert (wire["ourself"], wire["peers"][0]["name"], wire["removed"], wire["unicast"], wire["broadcast"]) == (
        h1, h2, ["aa:00:00:00:00:09"], {h2: h2}, {h1: [h2]})  # the MAC form, as plain strings were
    assert TopologyEvent.model_validate_json(event.model_dump_json()) == event
    assert MeshSend(kind="gossip", payload=b"x").dst is None
    with pytest.raises(ValidationError, match="not-a-peer"):
        MeshSend(kind="unicast", payload=b"x", dst="not-a-peer")


def test_decoding_bus_messages_keeps_no_string_values_in_pydantic_cache():
    """pydantic-core caches short JSON string values process-wide (16,384 of them) unless
    told not to: every container id and name seen on the bus stayed in memory (issue 15's
    soak). Message models cache field names only."""
    import gc
    import secrets
    import sys

    from shared.schemas.dns import AddRequest

    def kept() -> int:
        gc.collect()
        before = sys.getallocatedblocks()
        for i in range(2000):
            AddRequest.model_validate_json('{"container_id":"%s","ip":"10.32.0.1","fqdn":"c%d.weave.local"}'
                                           % (secrets.token_hex(8), i))
        gc.collect()
        return sys.getallocatedblocks() - before

    kept()  # first use: the validator's own one-off allocations
    assert kept() < 200  # (with values cached: ~2,000, about one string a message)
