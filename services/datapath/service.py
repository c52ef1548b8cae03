"""The `datapath` service process (asyncio shell): the host's `weave` bridge, its
containers, and the sleeve overlay to the other hosts.

At start, in order: the bridge (Weave's pcap layout, MAC = peer name; bridge.py); the
recorded attachments re-applied (only what is missing is made: a restart keeps
container interfaces and addresses; records.py); the bus API; the overlays
(overlay_shell.py): the sleeve (UDP on the launch host address, capture/inject on
vethwe-pcap, a forwarder per mesh connection; sleeve_shell.py) and the fastpath
(fastpath_shell.py), the OverlaySwitch choosing per connection.

Bus API (schemas in shared/schemas/datapath.py): weave.datapath.attach, detach, ps,
expose, hide, containers, endpoint_create and endpoint_delete (the Docker plugin's
veths, endpoints.py); Weave's HTTP routes POST /expose/{ip}/{len} and
/hide/{ip}/{len} (forwarded by the gossip service from 127.0.0.1:6784).

The fastpath (fastpath.py; mode from the launch config's `datapath`, which `weave
restart datapath --datapath MODE` overrides for this process: shared.config): its VXLAN device outlives a restart
(a restarted datapath re-adopts it, so fastpath traffic does not stop), and is removed
in mode sleeve or with the bridge.

Stop (`weave stop`, or the supervisor restarting us): the sleeve closes its sockets.
Containers keep their interfaces and addresses, as with Weave's `weave stop`; a
`weave launch` brings them back into the overlay. Only when nothing is attached or
exposed is the bridge removed too, so a host that never had containers is left as it
was before launch. `weave reset` removes the bridge and every container veth (and the
records, with the state dir), as Weave's does.
"""
from __future__ import annotations

import asyncio
import json
import logging
import sys

from services.datapath import endpoints
from services.datapath.bridge import BRIDGE, BRIDGE_PORT, PCAP_PORT, ensure_bridge
from services.datapath.containers import Containers
from services.datapath.fastpath import destroy_device
from services.datapath.host_iptables import HostIptables, rules
from services.datapath.ipam_client import Ipam
from services.datapath.link_watch import LinkDeletions
from services.datapath.metrics import DatapathCollector
from services.datapath.overlay_shell import OverlayShell
from services.datapath.records import ExposeRecord, Records
from shared import subjects
from shared.errors import WeaveError
from shared.http import HttpRouter, Request, Response
from shared.http_bus import serve_http
from shared.schemas import Ok
from shared.schemas.datapath import (AttachRequest, ContainerEvent, ContainersReply, ContainersRequest, DetachRequest,
                                     EndpointReply, EndpointRequest, ExposeRequest, HideRequest, PsRequest)
from shared.service import ServiceContext, run_service
from shared.weave.peer_name import PeerName

log = logging.getLogger("weave.datapath")
RECONCILE_S = 5.0
"""How often containers whose namespace vanished are looked for (and reported detached)
when the kernel's link notifications cannot be had (link_watch.py); with them, never."""



class DatapathApp:
    def __init__(self) -> None:
        self.overlay: OverlayShell | None = None
        self.records: Records | None = None
        self._tasks: set[asyncio.Task] = set()

    async def start(self, ctx: ServiceContext) -> None:
        self.ctx = ctx
        launch = ctx.config.launch
        self.bridge = await asyncio.to_thread(ensure_bridge, None, peer_name=launch.name)
        self.records = Records(launch.state_dir)
        self.records.load()
        self.npc = not launch.no_npc
        self.iptables: HostIptables | None = None
        self.containers = Containers(self.records, Ipam(ctx.bus), self._publish, on_exposed=self._on_exposed)
        await self.containers.restore()
        bus = ctx.bus
        await bus.serve(subjects.request("datapath", "attach"), AttachRequest, self.containers.attach)
        await bus.serve(subjects.request("datapath", "detach"), DetachRequest, self.containers.detach)
        await bus.serve(subjects.request("datapath", "ps"), PsRequest, self.containers.ps)
        await bus.serve(subjects.request("datapath", "expose"), ExposeRequest, self.containers.expose)
        await bus.serve(subjects.request("datapath", "hide"), HideRequest, self.containers.hide)
        await bus.serve(subjects.request("datapath", "containers"), ContainersRequest, self._on_containers)
        await bus.serve(subjects.request("datapath", "endpoint_create"), EndpointRequest, self._on_endpoint_create)
        await bus.serve(subjects.request("datapath", "endpoint_delete"), EndpointRequest, self._on_endpoint_delete)
        await serve_http(bus, "datapath", self._http_routes())
        self.mode = launch.datapath
        self.overlay = OverlayShell(bus, PeerName.parse(launch.name), launch.host, launch.port, PCAP_PORT,
                                    mode=self.mode, bridge=BRIDGE, bridge_port=BRIDGE_PORT, settings=ctx.config.settings)
        await self.overlay.start()
        ctx.registry.register(DatapathCollector(lambda: self.overlay,
                                                lambda: len(self.records.containers) if self.records else 0))
        self._spawn(self._reconcile_loop())
        log.info("bridge %s (mtu %d) up; %d containers attached", self.bridge.name, self.bridge.mtu,
                 len(self.records.containers))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.overlay is not None:
            await self.overlay.stop()
        if await self.containers.teardown_if_unused():
            await asyncio.to_thread(destroy_device, BRIDGE_PORT)
            log.info("nothing attached: bridge (and fastpath device) removed")

    def health(self) -> tuple[bool, str]:
        if self.overlay is None:
            return False, "starting"
        n = self.overlay.sleeve.established()
        f = len(self.overlay.switch.fast_peers)
        return True, (f"{len(self.records.containers)} containers, {n} sleeve connections established, "
                      f"{f} peers on the fastpath (mode {self.mode})")

    async def _on_exposed(self, rec: ExposeRecord) -> None:
        """weaver's NAT (and, without npc, FORWARD) rules for what is exposed now. A
        failure is logged, not raised: the addresses are exposed either way."""
        want = rules(rec.cidrs, unmasqueraded=rec.unmasqueraded, npc=self.npc, bridge=BRIDGE)

        def apply() -> None:
            if self.iptables is None:
                self.iptables = HostIptables()
            self.iptables.apply(want)
        try:
            await asyncio.to_thread(apply)
        except Exception as exc:
            log.error("iptables for weave:expose not set (containers cannot reach beyond this host): %s", exc)

    def _spawn(self, coro) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _publish(self, event: ContainerEvent) -> None:
        try:
            await self.ctx.bus.publish(subjects.event("containers"), event)
        except Exception as exc:  # the bus may be restarting: dns/npc resync from `containers`
            log.warning("cannot publish %s of %s: %s", event.kind, event.container_id, exc)

    async def _on_containers(self, _: ContainersRequest) -> ContainersReply:
        return ContainersReply(containers=tuple(self.containers.events()))

    async def _on_endpoint_create(self, req: EndpointRequest) -> EndpointReply:
        """A Docker plugin endpoint's veth (endpoints.py), under the attach lock."""
        async with self.containers.lock:
            ep = await asyncio.to_thread(endpoints.create, req.endpoint_id)
        return EndpointReply(host_ifname=ep.host_ifname, guest_ifname=ep.guest_ifname, mac=ep.mac)

    async def _on_endpoint_delete(self, req: EndpointRequest) -> Ok:
        async with self.containers.lock:
            await asyncio.to_thread(endpoints.delete, req.endpoint_id)
        return Ok()

    async def _reconcile_loop(self) -> None:
        """Forget vanished containers: once at start (they may have gone while no
        datapath ran), then whenever the kernel says a link was deleted (a container's
        namespace takes its veth with it). Without link notifications (the socket
        refused), every RECONCILE_S."""
        try:
            links = LinkDeletions()
        except OSError as exc:
            log.warning("no link notifications (%s): looking for vanished containers every %.0f s", exc, RECONCILE_S)
            links = None
        try:
            while True:
                try:
                    await self.containers.reconcile()
                except WeaveError as exc:
                    log.warning("reconcile: %s", exc)
                await (links.next() if links else asyncio.sleep(RECONCILE_S))
        finally:
            if links:
                links.close()

    # -- Weave's HTTP routes -----------------------------------------------------------------
    def _http_routes(self) -> HttpRouter:
        http = HttpRouter()

        async def expose(req: Request) -> Response:
            skip_nat = req.query.get("skipNAT", [""])[0].lower() == "true"
            return await self._http_call(self.containers.expose(
                ExposeRequest(addrs=(f"{req.params['ip']}/{req.params['len']}",), masquerade=not skip_nat)))

        async def hide(req: Request) -> Response:
            return await self._http_call(self.containers.hide(
                HideRequest(addrs=(f"{req.params['ip']}/{req.params['len']}",))))

        async def status(_: Request) -> Response:
            return Response(200, "")

        async def report(_: Request) -> Response:
            """Merged into gossip's /report: the Router fields the datapath knows."""
            return Response(200, json.dumps({"Router": self.overlay.report() if self.overlay else {}}),
                            "application/json")

        http.add("POST", "/expose/{ip}/{len}", expose)
        http.add("POST", "/hide/{ip}/{len}", hide)
        http.add("GET", "/status", status)
        http.add("GET", "/report", report)
        return http

    async def _http_call(self, coro) -> Response:
        codes = {"bad_request": 400, "not_found": 404, "conflict": 409, "unavailable": 503}
        try:
            await coro
        except WeaveError as exc:
            return Response(codes.get(exc.code, 500), exc.message + "\n")
        return Response(204, "")



def main(argv: list[str] | None = None) -> None:
    """`weave-datapath` runs the service; `weave-datapath reset` removes what it made
    on this host (services/datapath/reset.py) and exits."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "reset":
        from services.datapath.reset import main as reset_main
        sys.exit(reset_main(argv[1:]))
    if argv:
        sys.exit(f"weave-datapath: unknown command {argv[0]!r}; expected no argument (run the service) or 'reset'")
    run_service("datapath", DatapathApp)


if __name__ == "__main__":
    main()
