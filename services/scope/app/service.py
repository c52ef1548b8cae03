"""The `scope-app` service (asyncio shell): Weave Scope's app for this host.

Takes probe reports from three places, all into one 15 s window (collector.py):
- this host's probe, on the local bus (`weave.events.scope-report`, a `ProbeReport`);
- every other host's probe, from the mesh (`weave.mesh.weave-py-scope.in`, a
  `MeshReceive` whose payload is `encode_mesh(ProbeReport)`);
- any Scope probe, by `POST /api/report` (http_api.py).
Serves Scope 1.13's HTTP API and websockets, the page, controls and pipes on
`scope_listen` (127.0.0.1:4040; any other address needs the token, auth.py), with
/metrics and /healthz on its service port (6794). A bad report from anywhere is logged,
counted and dropped; the app goes on.

Run: `python -m services.scope.app.service` (console script `weave-scope-app`).
"""
from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from pydantic import ValidationError

from services.scope.app.config import AppConfig
from services.scope.app.http_api import make_web_app
from services.scope.app.state import AppState
from shared import subjects
from shared.bus import BusMsg
from shared.errors import RemoteProtocolError
from shared.schemas.mesh import MeshReceive
from shared.schemas.scope import REPORT_TOPIC, SCOPE_CHANNEL, ProbeReport, decode_mesh
from shared.service import ServiceContext, run_service

log = logging.getLogger("weave.scope.app")
NAME = "scope-app"


class ScopeApp:
    def __init__(self, config: AppConfig | None = None) -> None:
        """`config` None: built at start from the launch config and service settings."""
        self._config = config
        self.state: AppState | None = None
        self._runner: web.AppRunner | None = None
        self.port = 0
        """The HTTP port actually bound (listen_port 0 picks a free one)."""

    async def start(self, ctx: ServiceContext) -> None:
        try:
            config = self._config or AppConfig.from_launch(ctx.config.launch, ctx.config.settings)
        except ValueError as exc:  # what `weave launch` refuses too: never serve it open
            log.error("scope-app will not start: %s", exc)
            raise
        self.state = AppState(config, ctx.clock, ctx.registry)
        await ctx.bus.subscribe(subjects.event(REPORT_TOPIC), self._on_local_report)
        await ctx.bus.subscribe(subjects.mesh_in(SCOPE_CHANNEL), self._on_mesh_report)
        # bodies as sent: the codec inflates them, bounded (aiohttp would inflate unbounded)
        self._runner = web.AppRunner(make_web_app(self.state), access_log=None, auto_decompress=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, config.listen_host, config.listen_port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        log.info("Scope app on http://%s:%d (window %.0f s)", config.listen_host, self.port, config.settings.window_s)

    async def stop(self) -> None:
        if self.state is not None:  # clients reconnect (the page retries); do not wait for them
            await asyncio.gather(*(ws.close(code=1001, message=b"app stopping") for ws in list(self.state.websockets)),
                                 return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()

    def health(self) -> tuple[bool, str]:
        if self.state is None or self._runner is None:
            return False, "starting"
        probes = len(self.state.collector.probes(self.state.clock.monotonic()))
        return True, f"{probes} probes reporting; API on {self.state.config.listen_host}:{self.port}"

    async def _on_local_report(self, msg: BusMsg) -> None:
        try:
            self.state.take_probe_report(ProbeReport.model_validate_json(msg.data), "bus")
        except (ValidationError, RemoteProtocolError) as exc:
            self._reject("bus", exc)

    async def _on_mesh_report(self, msg: BusMsg) -> None:
        try:
            delivery = MeshReceive.model_validate_json(msg.data)
            self.state.take_probe_report(decode_mesh(delivery.payload), "mesh")
        except (ValidationError, RemoteProtocolError) as exc:
            self._reject("mesh", exc)

    def _reject(self, source: str, exc: Exception) -> None:
        reason = exc.code if isinstance(exc, RemoteProtocolError) else "bad_message"
        self.state.rejected.labels(source, reason).inc()
        log.warning("dropped a scope report from the %s: %s", source, str(exc).splitlines()[0][:200])


def main() -> None:
    run_service(NAME, ScopeApp)


if __name__ == "__main__":
    main()
