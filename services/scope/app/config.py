"""The Scope app's settings (one class; units in the names; why each default).

Built from the launch config at start (`from_launch`): `scope_listen`, `scope_token`,
`scope_controls`, the trace dir and the `scope-app` service settings' `window_s`. Those
fields are read with defaults so the app also runs under a launch config that predates
them. `from_launch` refuses (ValueError, one line) what `weave launch` refuses: a
non-loopback address or controls without a token.
"""
from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path

from shared.config import scope_exposure_problem
from shared.schemas.scope import MAX_BODY

VERSION = "weave-py-0.1.0"
"""What `GET /api` says the app is (the UI shows it); Scope's own says e.g. `1.13.2`."""


@dataclass(frozen=True)
class AppConfig:
    listen_host: str = "127.0.0.1"
    listen_port: int = 4040
    """Scope's app port. Loopback by default; any other address needs `token`."""
    window_s: float = 15.0
    """Reports kept per probe and merged (Scope's --app.window)."""
    token: str | None = None
    """When set, every request needs it (auth.py): a bearer header, the cookie `/login`
    sets, or a probe's `Authorization: Scope-Probe token=<token>`; else 401."""
    controls: bool = False
    """Run controls (`POST /api/control/...`) and pipes; off: refused with 403."""
    trace_dir: Path | None = None
    """This host's span files (shared.tracing), for `/api/weave/traces`; None: no traces."""
    max_control_body_bytes: int = 64 << 10
    """Largest `POST /api/control/...` body (a JSON map of a few arguments)."""
    max_ws_frame_bytes: int = 1 << 20
    """Largest websocket message taken from a client or probe (control RPCs, pipe
    data); a larger one closes that websocket (1009)."""
    control_timeout_s: float = 15.0
    """How long a control may take on the probe before the app answers with an error
    (a service restart takes a few seconds)."""
    max_pipes: int = 32
    """Open pipes (terminals) at once."""
    pipe_connect_timeout_s: float = 60.0
    """A pipe whose two ends have not both connected by then is closed (Scope: 1 min)."""
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
        listen = getattr(launch, "scope_listen", "127.0.0.1:4040")
        token = getattr(launch, "scope_token", None) or None
        controls = bool(getattr(launch, "scope_controls", False))
        problem = scope_exposure_problem(listen, token, controls)
        if problem is not None:
            raise ValueError(problem)
        host, _, port = listen.rpartition(":")
        trace_dir = getattr(launch, "trace_dir", None)
        return cls(listen_host=host.strip("[]") or "0.0.0.0", listen_port=int(port),
                   window_s=float(getattr(settings, "window_s", 15.0)), token=token, controls=controls,
                   trace_dir=Path(trace_dir) if trace_dir is not None else None,
                   hostname=getattr(launch, "nickname", None) or socket.gethostname())
