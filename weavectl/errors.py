"""The CLI's failure type, in a module of its own so that every command can raise it
without importing the launcher (and with it pydantic and the bus client)."""
from __future__ import annotations


class LaunchError(Exception):
    """A command's failure with a one-line reason and a hint for the user."""

    def __init__(self, reason: str, hint: str = "") -> None:
        super().__init__(reason)
        self.reason, self.hint = reason, hint
