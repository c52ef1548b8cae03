"""shared/http.py's router: `{name}` segments, 404, 405, prefixes; and no regular
expression compiled per route (each service's start ran the re compiler for its routes,
copying the pages of that code out of the supervisor's memory: issue 15)."""
from __future__ import annotations

import asyncio
import re

import pytest

from shared.http import HttpRouter, Request, Response


def _request(method: str, path: str) -> Request:
    return Request(method=method, path=path, query={}, headers={}, body=b"")


def _router() -> HttpRouter:
    router = HttpRouter()

    def answer(name: str):
        async def handler(req: Request) -> Response:
            return Response(200, f"{name} {sorted(req.params.items())}")
        return handler

    router.add("GET", "/status", answer("status"))
    router.add("GET", "/status/{view}", answer("view"))
    router.add("PUT", "/name/{container}/{ip}", answer("name"))
    router.add("DELETE", "/name/{container}/{ip}", answer("delete"))
    router.add_prefix("/api", answer("prefix"))
    return router


@pytest.mark.parametrize("method,path,status,body", [
    ("GET", "/status", 200, "status []"),
    ("GET", "/status/dns", 200, "view [('view', 'dns')]"),
    ("GET", "/status/a%2Fb", 200, "view [('view', 'a/b')]"),  # one segment, unquoted after matching
    ("PUT", "/name/c1/10.32.0.1", 200, "name [('container', 'c1'), ('ip', '10.32.0.1')]"),
    ("DELETE", "/name/c1/10.32.0.1", 200, "delete [('container', 'c1'), ('ip', '10.32.0.1')]"),
    ("GET", "/status/", 404, None),           # an empty segment is no value
    ("GET", "/status/dns/more", 404, None),   # a value is one segment
    ("GET", "/statusx", 404, None),
    ("GET", "/name/c1/10.32.0.1", 405, None),
    ("POST", "/status", 405, None),
    ("GET", "/api/v1/anything", 200, "prefix []"),
    ("GET", "/api", 200, "prefix []"),
    ("GET", "/apix", 404, None),
])
def test_routes(method, path, status, body):
    resp = asyncio.run(_router().dispatch(_request(method, path)))
    assert resp.status == status, resp.body
    if body is not None:
        assert resp.body == body


def test_no_regular_expression_is_compiled():
    compiled = []
    original = re._compile

    def recording(pattern, flags):
        compiled.append(pattern)
        return original(pattern, flags)

    re._compile = recording
    try:
        router = _router()
        resp = asyncio.run(router.dispatch(_request("GET", "/status/ipam")))
    finally:
        re._compile = original
    assert resp.status == 200 and compiled == [], compiled
