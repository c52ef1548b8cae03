"""Exceptions shared by every service.

Errors say who is at fault (STYLE.md rule 10):
- `RemoteProtocolError`: bytes or messages from another peer (or another local
  process on the bus) that break the protocol. Raised where remote input enters a
  core; the shell closes that one connection or drops that one message, never the
  process.
- `LocalProtocolError`: our own code misused an API (a bug on this side).
Both carry attributes, not only a string.
"""
from __future__ import annotations


class WeaveError(Exception):
    """Base of every project error. `code` is a short machine-readable reason."""

    code: str = "error"

    def __init__(self, message: str, *, code: str | None = None, **attrs: object) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        self.attrs = attrs


class RemoteProtocolError(WeaveError):
    """The remote side sent something that violates the protocol."""

    code = "remote_protocol_error"


class LocalProtocolError(WeaveError):
    """We tried to do something the protocol does not allow (a bug here)."""

    code = "local_protocol_error"
