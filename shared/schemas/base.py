"""The base of every bus message, and the structured error reply.

Rules (STYLE.md 6): frozen, `extra="forbid"`, a `version` field, a docstring per
field. A request handler that fails replies with `ErrorReply` (a code and a
description), never with silence: the caller gets a reason, not a timeout.
"""
from __future__ import annotations

import json
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, ValidationError, WithJsonSchema

from shared.weave.peer_name import PeerName

SCHEMA_VERSION = 1

PeerNameField = Annotated[PeerName, PlainValidator(PeerName.of), PlainSerializer(str, return_type=str),
                          WithJsonSchema({"type": "string", "pattern": "^[0-9a-f]{2}(:[0-9a-f]{2}){5}$"})]
"""A peer name: a `PeerName` in memory, its MAC form (`aa:bb:cc:dd:ee:ff`) in JSON, so
a receiver never parses one and the wire is what it was with plain strings. Built from
a PeerName, a number or any text `PeerName.parse` takes."""


class Message(BaseModel):
    """Base class of every message on the bus."""

    # bytes fields travel as base64 in JSON (gossip payloads, keys). cache_strings="keys":
    # pydantic-core keeps every short string value it decodes from JSON in a process-wide
    # cache of 16,384 entries by default, so each container id, name and address seen on
    # the bus stayed in memory until pushed out (weaveDNS grew ~0.1 MB a minute under one
    # attach and detach a second, bench.footprint --soak); field names still are cached.
    model_config = ConfigDict(frozen=True, extra="forbid", ser_json_bytes="base64", val_json_bytes="base64",
                              cache_strings="keys")

    version: Literal[1] = Field(SCHEMA_VERSION, description="Schema version; bumped on incompatible change.")


class ErrorReply(Message):
    """What a request handler sends back when it cannot do what was asked."""

    kind: Literal["error"] = Field("error", description="Tag that tells an error from a reply.")
    code: str = Field(description="Short machine-readable reason, e.g. bad_request, not_found, unavailable.")
    description: str = Field(description="One line for a person: what went wrong and, if known, what to do.")


class Ok(Message):
    """An empty successful reply."""

    kind: Literal["ok"] = Field("ok", description="Tag of an empty successful reply.")


M = TypeVar("M", bound=Message)


def parse_reply(data: bytes, reply_type: type[M]) -> M | ErrorReply:
    """Decode a reply: an ErrorReply if it is tagged `error`, else `reply_type`.

    Raises pydantic.ValidationError if it is neither (a broken responder).
    """
    try:
        raw = json.loads(data)
    except ValueError as exc:
        raise ValidationError.from_exception_data("reply", [
            {"type": "json_invalid", "loc": (), "input": data[:64], "ctx": {"error": str(exc)}},
        ]) from exc
    if isinstance(raw, dict) and raw.get("kind") == "error":
        return ErrorReply.model_validate(raw)
    return reply_type.model_validate(raw)
