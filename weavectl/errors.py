"""The CLI's failure type, in a module of its own so that every command can raise it
without importing the launcher (and with it pydantic and the bus client), and how an
unexpected error is said in one line (by the CLI, and by the supervisor for a launch)."""
from __future__ import annotations


class LaunchError(Exception):
    """A command's failure with a one-line reason and a hint for the user."""

    def __init__(self, reason: str, hint: str = "") -> None:
        super().__init__(reason)
        self.reason, self.hint = reason, hint


def describe_error(exc: Exception) -> tuple[str, str]:
    """(reason, hint) for an error no command turned into a LaunchError."""
    from shared.bus import BusError

    if isinstance(exc, BusError):
        return f"{exc.code}: {exc.message}", ""
    if isinstance(exc, PermissionError):
        return f"permission denied: {exc.filename or exc}", "run it as root (sudo weave ...)"
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}" + (f": {exc.filename}" if exc.filename else ""), ""
    return (f"unexpected error ({type(exc).__name__}): {exc}",
            "this is a bug; WEAVE_DEBUG=1 shows where it happened")
