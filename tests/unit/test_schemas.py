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
