"""The page: `GET /` and `GET /static/<file>`, from the bundle `make` builds
(services/scope/app/web: `npm ci` from the lockfile, then esbuild into web/dist).

Nothing is loaded from elsewhere: the bundle holds the graph library, the terminal and
our code. Only files the build wrote are served (no paths: a name with a `/` or `..`
is 404). A missing bundle is a 503 with a one-line reason, not a blank page.
"""
from __future__ import annotations

import mimetypes
from pathlib import Path

from aiohttp import web

WEB_DIR = Path(__file__).parent / "web"
DIST = WEB_DIR / "dist"
ENTRY = "index.html"
NOT_BUILT = ("503 the Scope page is not built: run 'make web' (npm ci and esbuild in "
             "services/scope/app/web); the API under /api works without it\n")
_TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html", ".map": "application/json",
          ".svg": "image/svg+xml", ".png": "image/png", ".woff2": "font/woff2"}


def built(dist: Path = DIST) -> bool:
    return (dist / ENTRY).is_file() and (dist / "app.js").is_file()


def _file(dist: Path, name: str) -> web.StreamResponse:
    if "/" in name or "\\" in name or name.startswith(".") or not (dist / name).is_file():
        return web.Response(status=404, text="404 page not found\n")
    ctype = _TYPES.get(Path(name).suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
    return web.FileResponse(dist / name, headers={"Content-Type": ctype, "Cache-Control": "no-cache",
                                                  "X-Content-Type-Options": "nosniff"})


def add_routes(app: web.Application, dist: Path = DIST) -> None:
    async def index(_: web.Request) -> web.StreamResponse:
        if not built(dist):
            return web.Response(status=503, text=NOT_BUILT)
        resp = _file(dist, ENTRY)
        resp.headers["Content-Security-Policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            "connect-src 'self'; frame-ancestors 'none'")
        return resp

    async def static(request: web.Request) -> web.StreamResponse:
        if not built(dist):
            return web.Response(status=503, text=NOT_BUILT)
        return _file(dist, request.match_info["name"])

    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
