"""Every message on the bus, as frozen pydantic models (one source of truth).

Modules: `base` (the message base class, error replies), `common` (health,
supervisor). Each service issue adds its own module here (`mesh`, `ipam`, `dns`,
`datapath`, `npc`); no service keeps a private copy of a schema.
"""
from shared.schemas.base import ErrorReply, Message, Ok, parse_reply
from shared.schemas.common import (
    HealthReply,
    HealthRequest,
    RestartRequest,
    ServiceProcess,
    ServicesReply,
    ServicesRequest,
    StopRequest,
)

__all__ = [
    "ErrorReply", "Message", "Ok", "parse_reply",
    "HealthReply", "HealthRequest", "RestartRequest", "ServiceProcess",
    "ServicesReply", "ServicesRequest", "StopRequest",
]
