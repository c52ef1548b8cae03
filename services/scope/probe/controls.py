"""The probe's controls (Scope's probe/controls handler registry, and the host and
docker controls), run when an app asks on the control websocket (control_client.py).

| control | on | does |
|---|---|---|
| `host_exec` | a host | a shell on this host (a pipe, raw tty) |
| `host_resize_exec_tty` | a host | resize that shell (args `pipeID`, `width`, `height`) |
| `docker_exec_container` | a container | a shell in the container's network namespace |
| `docker_resize_exec_tty` | a container | resize it |
| `weave_py_detach_container` | a container | `weave detach` it (the datapath, over the bus) |
| `weave_py_restart_service` | a host | restart one of this host's services (arg `service`; the supervisor) |

Refused with a clear `error` (never run): every control while this host's controls are
off (`weave launch --scope-controls`), a control this probe does not know, a node that is
not this probe's (another host, an unknown container), bad arguments. Each control runs
in a span (`scope-probe control <name>`) carrying `weave.container` for container
controls, so a container's traces list it.
"""
from __future__ import annotations

import asyncio
import logging
import secrets
from typing import Awaitable, Callable

from services.scope import ids, xfer
from services.scope.probe.terminal import Terminal, container_argv, host_argv
from shared import subjects
from shared.bus import Bus, BusError
from shared.schemas.common import RestartRequest, ServicesReply
from shared.schemas.datapath import DetachReply, DetachRequest
from shared.tracing import tracer

log = logging.getLogger("weave.scope.probe.controls")

HOST_EXEC, HOST_RESIZE = "host_exec", "host_resize_exec_tty"
CONTAINER_EXEC, CONTAINER_RESIZE = "docker_exec_container", "docker_resize_exec_tty"
DETACH, RESTART = "weave_py_detach_container", "weave_py_restart_service"
SERVICES = ("gossip", "ipam", "dns", "datapath", "npc", "scope-probe", "scope-app")
"""What `weave_py_restart_service` may restart (nats is the bus the answer goes over)."""
SELF_ENDING = ("scope-probe", "scope-app")
"""Restarting these ends this control's own path: answered first, then done."""
OFF = "controls are off on host {host}: launch it with 'weave launch --scope-controls --scope-token TOKEN'"
MAX_TERMINALS = 16


OpenPipe = Callable[[str, Terminal], None]
"""`open_pipe(pipe_id, terminal)`: connects a new shell's pipe to the app that asked
(control_client.py)."""


class Controls:
    """Control name -> handler, for one probe."""

    def __init__(self, hostname: str, bus: Bus, enabled: bool, containers: Callable[[], set[str]]) -> None:
        """`containers`: the ids of the containers attached on this host now."""
        self.hostname, self.bus, self.enabled, self.containers = hostname, bus, enabled, containers
        self.host_id = ids.make_host_node_id(hostname)
        self.terminals: dict[str, Terminal] = {}
        self._handlers: dict[str, Callable[[xfer.Request, OpenPipe | None], Awaitable[dict]]] = {
            HOST_EXEC: self._host_exec, HOST_RESIZE: self._resize, CONTAINER_EXEC: self._container_exec,
            CONTAINER_RESIZE: self._resize, DETACH: self._detach, RESTART: self._restart}

    async def handle(self, request: xfer.Request, open_pipe: OpenPipe | None = None) -> dict:
        """A control's response (Scope's xfer.Response); never raises for a bad request."""
        if not self.enabled:
            return xfer.response(error=OFF.format(host=self.hostname))
        handler = self._handlers.get(request.control)
        if handler is None:
            return xfer.response(error=f"unknown control {request.control!r}: this probe runs "
                                       f"{', '.join(sorted(self._handlers))}")
        container = ids.parse_container_node_id(request.node_id)
        attributes = {"weave.container": container} if container else {}
        with tracer("weave.scope.probe").start_as_current_span(f"scope-probe control {request.control}",
                                                               attributes=attributes):
            try:
                return await handler(request, open_pipe)
            except OSError as exc:
                return xfer.response(error=f"{request.control} failed: {exc}")

    # -- node checks -----------------------------------------------------------------------
    def _own_container(self, request: xfer.Request) -> str | dict:
        container = ids.parse_container_node_id(request.node_id)
        if container is None:
            return xfer.response(error=f"{request.control} needs a container node, not {request.node_id!r}")
        if container not in self.containers():
            return xfer.response(error=f"container {container} is not attached on host {self.hostname}")
        return container

    def _own_host(self, request: xfer.Request) -> dict | None:
        if request.node_id != self.host_id:
            return xfer.response(error=f"{request.control} runs on this probe's host {self.host_id}, "
                                       f"not {request.node_id!r}")
        return None

    # -- terminals -------------------------------------------------------------------------
    async def _host_exec(self, request: xfer.Request, open_pipe: OpenPipe | None) -> dict:
        refused = self._own_host(request)
        return refused if refused is not None else self._terminal(host_argv(), HOST_RESIZE, open_pipe)

    async def _container_exec(self, request: xfer.Request, open_pipe: OpenPipe | None) -> dict:
        container = self._own_container(request)
        if isinstance(container, dict):
            return container
        return self._terminal(container_argv(container), CONTAINER_RESIZE, open_pipe)

    def _terminal(self, argv: list[str], resize: str, open_pipe: OpenPipe | None) -> dict:
        if open_pipe is None:
            return xfer.response(error="this connection carries no pipes")
        if len(self.terminals) >= MAX_TERMINALS:
            return xfer.response(error=f"{MAX_TERMINALS} terminals are open on {self.hostname} already")
        pipe_id = secrets.token_hex(16)
        terminal = Terminal(argv)
        self.terminals[pipe_id] = terminal
        open_pipe(pipe_id, terminal)
        return xfer.response(pipe=pipe_id, raw_tty=True, resize_tty_control=resize)

    def closed(self, pipe_id: str) -> None:
        terminal = self.terminals.pop(pipe_id, None)
        if terminal is not None:
            terminal.close()

    async def _resize(self, request: xfer.Request, _: OpenPipe | None) -> dict:
        terminal = self.terminals.get(request.args.get("pipeID", ""))
        if terminal is None:
            return xfer.response(error=f"unknown pipeID {request.args.get('pipeID', '')!r}")
        try:
            rows, cols = int(request.args.get("height", "")), int(request.args.get("width", ""))
        except ValueError:
            return xfer.response(error="height and width must be integers")
        if not (0 < rows < 1000 and 0 < cols < 1000):
            return xfer.response(error="height and width must be between 1 and 999")
        terminal.resize(rows, cols)
        return xfer.response()

    # -- the other services ----------------------------------------------------------------
    async def _detach(self, request: xfer.Request, _: OpenPipe | None) -> dict:
        container = self._own_container(request)
        if isinstance(container, dict):
            return container
        try:
            reply = await self.bus.request(subjects.request("datapath", "detach"), DetachRequest(container=container),
                                           DetachReply, timeout=10.0)
        except BusError as exc:
            return xfer.response(error=f"detach {container}: {exc.description}")
        removed = " ".join(c.split("/")[0] for c in reply.removed)
        return xfer.response(f"detached {container} from weave ({removed or 'no addresses'})")

    async def _restart(self, request: xfer.Request, _: OpenPipe | None) -> dict:
        refused = self._own_host(request)
        if refused is not None:
            return refused
        service = request.args.get("service", "")
        if service not in SERVICES:
            return xfer.response(error=f"service {service!r} is not one of {', '.join(SERVICES)}")
        if service in SELF_ENDING:  # answer before the restart ends this connection
            asyncio.get_running_loop().call_later(0.3, lambda: asyncio.ensure_future(self._ask_restart(service)))
            return xfer.response(f"restarting {service} on {self.hostname}")
        error = await self._ask_restart(service)
        return xfer.response(error=error) if error else xfer.response(f"restarted {service} on {self.hostname}")

    async def _ask_restart(self, service: str) -> str:
        try:
            await self.bus.request(subjects.supervisor("restart"), RestartRequest(service=service), ServicesReply,
                                   timeout=15.0)
        except BusError as exc:
            log.warning("restart of %s failed: %s", service, exc.description)
            return f"restart {service}: {exc.description}"
        return ""

    def close(self) -> None:
        for pipe_id in list(self.terminals):
            self.closed(pipe_id)
