"""Weave Net's HTTP API is one port (127.0.0.1:6784); here each service owns its routes.
The gossip service, which listens on that port, forwards a request for another
service over the bus (`weave.<service>.http`) and returns its reply unchanged."""
from __future__ import annotations

from pydantic import Field

from shared.schemas.base import Message


class HttpRequest(Message):
    """One HTTP request, forwarded to the service that owns its path."""

    method: str = Field(description="GET, POST, PUT or DELETE.")
    path: str = Field(description="URL path, e.g. /ip/abc123.")
    query: dict[str, list[str]] = Field(default_factory=dict, description="Query string fields.")
    headers: dict[str, str] = Field(default_factory=dict, description="Request headers, lower-case names.")
    body: bytes = Field(b"", description="Request body.")


class HttpReply(Message):
    """The owning service's response."""

    status: int = Field(description="HTTP status code.")
    content_type: str = Field("text/plain; charset=utf-8", description="Content-Type of the body.")
    body: bytes = Field(b"", description="Response body.")
