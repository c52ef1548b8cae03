"""Weave Net's weaveDNS HTTP routes (weave:nameserver/http.go), served over the bus and
reached through the gossip service's 127.0.0.1:6784, plus the dns parts of
`weave status` (GET /status, /status/dns) and /report.

Differences from Weave, on purpose: PUT refuses a missing or malformed name (Weave
registers any string, or silently ignores an empty one) and answers 400 with the
reason; GET /name answers JSON whatever the Accept header says.
"""
from __future__ import annotations

import json
from typing import Protocol

from services.dns import status
from services.dns.config import DnsConfig
from services.dns.entry import DnsEntry
from services.dns.nameserver import Nameserver
from shared.errors import WeaveError
from shared.http import HttpRouter, Request, Response
from shared.weave.dns_names import BadAddress, BadName, check_fqdn, fqdn, parse_ipv4


class DnsApi(Protocol):
    """What these routes need of the dns service (its shell implements it)."""

    ns: Nameserver
    config: DnsConfig

    async def add(self, container_id: str, addrs: int | tuple[int, ...], name: str, *,
                  bind: bool = False) -> tuple[DnsEntry, ...]: ...

    async def remove(self, *, hostname: str | None = None, container_id: str | None = None,
                     addr: int | None = None, unbind: bool = False) -> tuple[DnsEntry, ...]: ...

    async def bind(self, container_id: str) -> None: ...

    async def container_alive(self, container_id: str) -> bool | None: ...

    def upstream_servers(self) -> tuple[str, ...]: ...

NO_CONTENT = Response(204, b"")


def api_router(app: DnsApi) -> HttpRouter:
    http = HttpRouter()

    async def put_name(req: Request) -> Response:
        form = req.form()
        try:
            addr = parse_ipv4(req.params["ip"])
            name = check_fqdn(form.get("fqdn", [""])[0])
        except (BadAddress, BadName) as exc:
            return Response(400, f"{exc}\n")
        container = req.params["container"]
        try:
            await app.add(container, addr, name)
            if form.get("check-alive", [""])[0] == "true":
                alive = await app.container_alive(container)
                if alive is False:
                    await app.remove(hostname=name, container_id=container, addr=addr)
                elif alive:
                    await app.bind(container)
        except WeaveError as exc:
            return Response(500, f"{exc}\n")
        return NO_CONTENT

    async def delete_name(req: Request) -> Response:
        given = req.form().get("fqdn", [""])[0]
        container = req.params.get("container", "*")
        addr = None
        if "ip" in req.params:
            try:
                addr = parse_ipv4(req.params["ip"])
            except BadAddress as exc:
                return Response(400, f"{exc}\n")
        try:
            await app.remove(hostname=fqdn(given) if given else None,
                             container_id=None if container == "*" else container, addr=addr)
        except WeaveError as exc:
            return Response(500, f"{exc}\n")
        return NO_CONTENT

    async def get_names(_: Request) -> Response:
        rows = [e.to_api_json() for e in app.ns.entries()]
        body = json.dumps(rows or None) + "\n"  # Go encodes an empty store as null
        return Response(200, body, "application/json")

    async def get_domain(_: Request) -> Response:
        return Response(200, app.ns.domain)

    async def get_dns_address(_: Request) -> Response:
        return Response(200, app.config.listen_host)

    async def get_dns_address_port(_: Request) -> Response:
        return Response(200, app.config.address)

    async def get_status(_: Request) -> Response:
        return Response(200, status.status_text(app.ns.domain, app.upstream_servers(), app.config.ttl_s,
                                                app.ns.entries()))

    async def get_status_dns(_: Request) -> Response:
        return Response(200, status.entries_text(app.ns.domain, app.ns.entries()))

    async def get_report(_: Request) -> Response:
        report = app.ns.report(upstream=app.upstream_servers() or None, address=app.config.address,
                               ttl=app.config.ttl_s)
        return Response(200, json.dumps({"DNS": report}), "application/json")

    http.add("PUT", "/name/{container}/{ip}", put_name)
    for pattern in ("/name/{container}/{ip}", "/name/{container}", "/name"):
        http.add("DELETE", pattern, delete_name)
    http.add("GET", "/name", get_names)
    http.add("GET", "/domain", get_domain)
    http.add("GET", "/dns-address", get_dns_address)
    http.add("GET", "/dns-address-port", get_dns_address_port)
    http.add("GET", "/status", get_status)
    http.add("GET", "/status/dns", get_status_dns)
    http.add("GET", "/report", get_report)
    return http
