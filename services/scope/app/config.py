"""The Scope app's settings (one class; units in the names; why each default).

Built from the launch config at start (`from_launch`): `scope_listen`, `scope_token`
and the `scope-app` service settings' `window_s`. Those fields are read with defaults
so the app also runs under a launch config that predates them.
"""
from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass, field

from shared.schemas.scope import MAX_BODY

VERSION = "weave-py-0.1.0"
"""What `GET /api` says the app is (the UI shows it); Scope's own says e.g. `1.13.2`."""


@dataclass(frozen=True)
class AppConfig:
    listen_host: str = "127.0.0.1"
    listen_port: int = 4040
    """Scope's app port. Loopback by default: the app has no authentication of readers."""
    window_s: float = 15.0
    """Reports kept per probe and merged (Scope's --app.window)."""
    token: str | None = None
    """When set, `POST /api/report` needs `Authorization: Scope-Probe token=<token>`."""
    max_body_bytes: int = MAX_BODY
    """Largest POSTed body (as sent, gzipped or not): the mesh's bound (8 MiB)."""
    ws_interval_s: float = 1.0
    """Websocket update interval without `?t=` (Scope's websocketLoop)."""
    ws_min_interval_s: float = 0.1
    """Shortest `?t=` honoured: a client cannot make the app render in a loop."""
    max_websockets: int = 256
    """Open topology websockets at most (each renders once per interval)."""
    hostname: str = field(default_factory=socket.gethostname)
    app_id: str = field(default_factory=lambda: secrets.token_hex(8))
    """`GET /api`'s id: random per start, 16 hex digits, as Scope's UniqueID."""
    version: str = VERSION

    @classmethod
    def from_launch(cls, launch, settings) -> "AppConfig":
        host, _, port = getattr(launch, "scope_listen", "127.0.0.1:4040").rpartition(":")
        return cls(listen_host=host.strip("[]") or "0.0.0.0", listen_port=int(port),
                   window_s=float(getattr(settings, "window_s", 15.0)),
                   token=getattr(launch, "scope_token", None) or None,
                   hostname=getattr(launch, "nickname", None) or socket.gethostname())
