"""What the Scope app runs with: the launch config's `scope_listen`, `scope_token`,
`scope_controls`, trace dir and nickname, and the service's settings
(`shared.config.ScopeAppSettings`, where every tunable is documented).
`from_launch` refuses (ValueError, one line) what `weave launch` refuses: a
non-loopback address or controls without a token.
"""
from __future__ import annotations

import secrets
import socket
from dataclasses import dataclass, field
from pathlib import Path

from shared.config import LaunchConfig, ScopeAppSettings, scope_exposure_problem

VERSION = "weave-py-0.1.0"
"""What `GET /api` says the app is (the UI shows it); Scope's own says e.g. `1.13.2`."""
_LAUNCH_DEFAULT_LISTEN: str = LaunchConfig.model_fields["scope_listen"].default


@dataclass(frozen=True)
class AppConfig:
    listen_host: str = _LAUNCH_DEFAULT_LISTEN.rpartition(":")[0]
    listen_port: int = int(_LAUNCH_DEFAULT_LISTEN.rpartition(":")[2])
    """Scope's app address (LaunchConfig.scope_listen). Any but loopback needs `token`."""
    token: str | None = None
    """When set, every request needs it (auth.py): a bearer header, the cookie `/login`
    sets, or a probe's `Authorization: Scope-Probe token=<token>`; else 401."""
    controls: bool = False
    """Run controls (`POST /api/control/...`) and pipes; off: refused with 403."""
    trace_dir: Path | None = None
    """This host's span files (shared.tracing), for `/api/weave/traces`; None: no traces."""
    settings: ScopeAppSettings = field(default_factory=ScopeAppSettings)
    """The service's tunables (production's by default)."""
    hostname: str = field(default_factory=socket.gethostname)
    app_id: str = field(default_factory=lambda: secrets.token_hex(8))
    """`GET /api`'s id: random per start, 16 hex digits, as Scope's UniqueID."""
    version: str = VERSION

    @classmethod
    def from_launch(cls, launch: LaunchConfig, settings: ScopeAppSettings) -> "AppConfig":
        problem = scope_exposure_problem(launch.scope_listen, launch.scope_token, launch.scope_controls)
        if problem is not None:
            raise ValueError(problem)
        host, _, port = launch.scope_listen.rpartition(":")
        return cls(listen_host=host.strip("[]") or "0.0.0.0", listen_port=int(port), settings=settings,
                   token=launch.scope_token or None, controls=launch.scope_controls, trace_dir=launch.trace_dir,
                   hostname=launch.nickname or socket.gethostname())
