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
