"""The `docker-plugin` service process (asyncio shell): Weave's Docker network plugin
and Docker watcher for this host's engine. It runs only where `weave launch` found a
Docker engine (LaunchConfig.docker_host).

- Plugin: Docker's remote plugin API over HTTP on two unix sockets in
  `docker_plugin_dir` (/run/docker/plugins: where dockerd looks for plugins),
  `weave.sock` and `weavemesh.sock` (Weave 2.8's two driver names), each a network
  driver and an IPAM driver (remote_api.py, driver.py, ipam.py). Veths come from the
  datapath (weave.datapath.endpoint_create / endpoint_delete), addresses from weave
  IPAM (weave.ipam.allocate / claim / release / status): this process touches no
  device and keeps no address.
- Watcher: Docker's container events (start, die, destroy), plus a reconcile at start
  and whenever the stream is opened again (watcher.py): plugin containers are adopted
  by the datapath (weave.datapath.attach with ipam=False), so weaveDNS names them and
  npc polices them; a Docker container that stops or is removed is detached.
- Health: healthy once both sockets listen; the detail says whether Docker's event
  stream is open.

One span per plugin call (`docker-plugin <Method>`) and per handled Docker event.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

from aiohttp import web

from services.docker_plugin import ipam, remote_api as api, watcher
from services.docker_plugin.driver import NetworkDriver, Refused
from shared import subjects
from shared.bus import BusError
from shared.docker import API_VERSION, DockerContainer, inspect, list_containers
from shared.schemas import Ok
from shared.schemas.datapath import (Attachment, AttachRequest, ContainersReply, ContainersRequest, DetachReply,
                                     DetachRequest, EndpointReply, EndpointRequest)
from shared.schemas.ipam import (AllocateReply, AllocateRequest, ClaimRequest, ReleaseRequest, StatusReply,
                                 StatusRequest)
from shared.service import ServiceContext, run_service
from shared.tracing import tracer
from shared.weave.docker_veth import veth_names

log = logging.getLogger("weave.docker-plugin")
SOCKETS = ("weave", "weavemesh")
DATAPATH_TIMEOUT_S = 15.0
IPAM_WAIT_S = 25.0


class DockerPluginApp:
    def __init__(self) -> None:
        self.driver = NetworkDriver(SOCKETS)
        self.listening: list[Path] = []
        self.events_open = False
        self._runner: web.AppRunner | None = None
        self._task: asyncio.Task | None = None
        self.docker = None

    # -- life cycle ------------------------------------------------------------------------
    async def start(self, ctx: ServiceContext) -> None:
        import aiodocker

        self.ctx, self.bus = ctx, ctx.bus
        launch = ctx.config.launch
        self.domain = launch.dns_domain
        self.docker = aiodocker.Docker(url=launch.docker_host, api_version=API_VERSION)
        app = web.Application()
        app.router.add_post("/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        plugin_dir = Path(launch.docker_plugin_dir)
        plugin_dir.mkdir(parents=True, exist_ok=True)
        for name in SOCKETS:
            path = plugin_dir / f"{name}.sock"
            path.unlink(missing_ok=True)  # a socket left by a killed process
            await web.UnixSite(self._runner, str(path)).start()
            self.listening.append(path)
        self._task = asyncio.get_running_loop().create_task(self._watch(ctx.config.settings.reconnect_s))
        log.info("Docker plugin on %s for the engine at %s", ", ".join(map(str, self.listening)), launch.docker_host)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
        for path in self.listening:
            path.unlink(missing_ok=True)
        if self.docker is not None:
            await self.docker.close()

    def health(self) -> tuple[bool, str]:
        if len(self.listening) < len(SOCKETS):
            return False, "starting"
        return True, (f"listening on {len(self.listening)} plugin sockets; Docker events "
                      f"{'open' if self.events_open else 'not open (engine away?)'}")

    # -- the plugin API ----------------------------------------------------------------------
    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        with tracer("weave.docker-plugin").start_as_current_span(f"docker-plugin {method}") as span:
            try:
                answer = await self._dispatch(api.parse(request.path, await request.read()))
            except (api.BadRequest, Refused) as exc:
                answer = api.error(str(exc))
            except BusError as exc:
                answer = api.error(f"{exc.code}: {exc.description}")
            if "Err" in answer:
                span.set_attribute("error.message", answer["Err"])
                log.warning("%s refused: %s", method, answer["Err"])
            return web.Response(body=api.encode(answer), content_type="application/json")

    async def _dispatch(self, req: api.Request) -> dict:
        if isinstance(req, api.Activate):
            return self.driver.activate()
        if isinstance(req, api.Simple):
            return self._simple(req)
        handler = getattr(self, f"_on_{type(req).__name__}")
        return await handler(req)

    def _simple(self, req: api.Simple) -> dict:
        if req.driver == api.IPAM_DRIVER:
            return {"GetCapabilities": ipam.capabilities(),
                    "GetDefaultAddressSpaces": ipam.ADDRESS_SPACES}.get(req.method, {})
        if req.method == "GetCapabilities":
            return self.driver.capabilities()
        if req.method == "EndpointOperInfo":
            return self.driver.endpoint_info()
        return {}

    async def _on_CreateNetwork(self, req: api.CreateNetwork) -> dict:
        return self.driver.create_network(req)

    async def _on_DeleteNetwork(self, req: api.DeleteNetwork) -> dict:
        return self.driver.delete_network(req)

    async def _on_CreateEndpoint(self, req: api.CreateEndpoint) -> dict:
        self.driver.check_endpoint(req)
        ep = await self.bus.request(subjects.request("datapath", "endpoint_create"),
                                    EndpointRequest(endpoint_id=req.endpoint_id), EndpointReply,
                                    timeout=DATAPATH_TIMEOUT_S)
        return self.driver.endpoint_created(req, ep.mac)

    async def _on_DeleteEndpoint(self, req: api.DeleteEndpoint) -> dict:
        await self.bus.request(subjects.request("datapath", "endpoint_delete"),
                               EndpointRequest(endpoint_id=req.endpoint_id), Ok, timeout=DATAPATH_TIMEOUT_S)
        return {}

    async def _on_Join(self, req: api.Join) -> dict:
        if req.network_id not in self.driver.networks:
            await self._learn(req.network_id)
        try:
            _, guest = veth_names(req.endpoint_id)
        except ValueError as exc:
            raise Refused(str(exc)) from None
        return self.driver.join(req, guest)

    async def _on_Leave(self, req: api.Leave) -> dict:
        return {}

    async def _on_RequestPool(self, req: api.RequestPool) -> dict:
        default = ""
        if not req.pool:
            status = await self.bus.request(subjects.request("ipam", "status"), StatusRequest(), StatusReply,
                                            timeout=5.0)
            default = status.default_subnet
        return ipam.pool(req, default)

    async def _on_ReleasePool(self, req: api.ReleasePool) -> dict:
        ipam.parse_pool_id(req.pool_id)
        return {}

    async def _on_RequestAddress(self, req: api.RequestAddress) -> dict:
        plan = ipam.address_plan(req)
        if plan.verb == "claim":
            await self.bus.request(subjects.request("ipam", "claim"),
                                   ClaimRequest(ident=ipam.NO_CONTAINER, cidr=plan.cidr, is_container=False,
                                                wait_s=IPAM_WAIT_S), Ok, timeout=IPAM_WAIT_S + 5)
            return ipam.address_answer(plan.cidr, plan)
        got = await self.bus.request(subjects.request("ipam", "allocate"),
                                     AllocateRequest(ident=ipam.NO_CONTAINER, subnet=plan.cidr, is_container=False,
                                                     wait_s=IPAM_WAIT_S), AllocateReply, timeout=IPAM_WAIT_S + 5)
        return ipam.address_answer(got.cidr, plan)

    async def _on_ReleaseAddress(self, req: api.ReleaseAddress) -> dict:
        await self.bus.request(subjects.request("ipam", "release"), ReleaseRequest(ident=ipam.release_ident(req)),
                               Ok, timeout=5.0)
        return {}

    async def _learn(self, network_id: str) -> None:
        import aiodocker

        try:
            net = await (await self.docker.networks.get(network_id)).show()
        except aiodocker.DockerError as exc:
            raise Refused(f"unable to find network info: {exc.message}") from None
        self.driver.learn(network_id, net.get("Driver", ""), net.get("Options") or {})

    # -- the watcher -------------------------------------------------------------------------
    async def _watch(self, reconnect_s: float) -> None:
        """Docker's container events, forever; a reconcile each time the stream opens."""
        while True:
            events = self.docker.events
            subscriber = events.subscribe(create_task=False)
            stream = asyncio.get_running_loop().create_task(
                events.run(filters=json.dumps({"type": ["container"]})))
            try:
                await self._reconcile()
                self.events_open = True
                while (event := await subscriber.get()) is not None:
                    await self._on_event(event)
            except asyncio.CancelledError:
                stream.cancel()
                raise
            except Exception as exc:  # the engine went away or answered nonsense: start again
                log.warning("Docker events: %s; again in %.0f s", exc, reconnect_s)
            self.events_open = False
            stream.cancel()
            await asyncio.gather(stream, return_exceptions=True)
            await asyncio.sleep(reconnect_s)

    async def _on_event(self, event: dict) -> None:
        action = str(event.get("Action") or event.get("status") or "")
        cid = (event.get("Actor") or {}).get("ID") or event.get("id") or ""
        if action not in ("start", "die", "destroy") or not cid:
            return
        with tracer("weave.docker-plugin").start_as_current_span(f"docker-plugin event {action}") as span:
            span.set_attribute("weave.container", cid)
            if action == "start":
                c = await inspect(self.docker, cid)
                actions = watcher.on_start(c, await self._networks(c), self.domain) if c else []
            else:
                actions = watcher.on_gone(cid, await self._attached())
            await self._carry_out(actions)

    async def _reconcile(self) -> None:
        running = await list_containers(self.docker)
        networks: dict = {}
        for c in running:
            networks.update(await self._networks(c))
        await self._carry_out(watcher.reconcile(running, await self._attached(), networks, self.domain))

    async def _networks(self, c: DockerContainer) -> dict:
        for ep in c.networks.values():
            if ep.network_id and ep.network_id not in self.driver.networks:
                try:
                    await self._learn(ep.network_id)
                except Refused as exc:
                    log.info("container %s: %s", c.short_id, exc)
        return {ep.network_id: self.driver.networks[ep.network_id] for ep in c.networks.values()
                if ep.network_id in self.driver.networks}

    async def _attached(self) -> set[str]:
        reply = await self.bus.request(subjects.request("datapath", "containers"), ContainersRequest(),
                                       ContainersReply, timeout=DATAPATH_TIMEOUT_S)
        return {c.container_id for c in reply.containers}

    async def _carry_out(self, actions: list[watcher.Action]) -> None:
        for a in actions:
            try:
                if isinstance(a, watcher.Adopt):
                    await self.bus.request(subjects.request("datapath", "attach"), AttachRequest(
                        container=a.netns, addrs=(a.cidr,), fqdn=a.fqdn, labels=a.labels, ifname=a.ifname,
                        multicast_route=a.multicast, container_id=a.container_id, ipam=False), Attachment,
                        timeout=DATAPATH_TIMEOUT_S)
                    log.info("container %s on weave as %s %s", a.container_id[:12], a.cidr, a.fqdn)
                else:
                    await self.bus.request(subjects.request("datapath", "detach"),
                                           DetachRequest(container=a.container_id), DetachReply,
                                           timeout=DATAPATH_TIMEOUT_S)
                    log.info("container %s gone: detached", a.container_id[:12])
            except BusError as exc:
                log.warning("%s of %s: %s", type(a).__name__.lower(), a.container_id[:12], exc.description)


def main() -> None:
    run_service("docker-plugin", DockerPluginApp)


if __name__ == "__main__":
    os.environ.setdefault("WEAVE_LOG_LEVEL", "INFO")
    main()
