"""Who may use the app (safe by default; docs/scope.md, "The page, controls, safety").

Exposed Scope apps (no authentication, a shell into every container) were used to take
over clusters, so:
- Without a token the app listens on loopback only (`config.from_launch` refuses any
  other address) and, against DNS rebinding, answers only requests whose `Host` is a
  loopback name or address (403 otherwise).
- With a token every request but `/login` needs it, presented as
  `Authorization: Bearer <token>` (scripts), `Authorization: Scope-Probe token=<token>`
  (probes: reports, the control websocket, pipes), or the session cookie that
  `/login?token=<token>` (or the login form, POST) sets: an HMAC of the token, never the
  token itself, `HttpOnly; SameSite=Strict`. Without it: 401 with a fixed body that
  says nothing of the app; the page (`/`) shows the login prompt instead.
- A request that changes something (POST, DELETE) or opens a websocket from another
  site (an `Origin` whose host is not the request's `Host`) is refused (403), so a page
  elsewhere cannot drive a logged-in browser.
Tokens are compared in constant time.
"""
from __future__ import annotations

import hashlib
import hmac
import html
import ipaddress
from typing import Awaitable, Callable
from urllib.parse import urlsplit

from aiohttp import web

COOKIE = "weave_scope_session"
UNAUTHORIZED_BODY = "401 unauthorized: this Weave Scope app needs its token (see /login)\n"
OPEN_PATHS = frozenset({"/login"})
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def session_value(token: str) -> str:
    """The cookie's value for `token` (stable across app restarts, useless elsewhere)."""
    return hmac.new(token.encode(), b"weave-scope-ui-session", hashlib.sha256).hexdigest()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def authorized(request: web.Request, token: str | None) -> bool:
    """Whether the request presents `token` (always, when there is none)."""
    if not token:
        return True
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and _same(value.strip(), token):
        return True
    if scheme == "Scope-Probe" and _same(value.strip(), f"token={token}"):
        return True
    cookie = request.cookies.get(COOKIE, "")
    return bool(cookie) and _same(cookie, session_value(token))


def loopback_host(host_header: str) -> bool:
    """`Host` names this machine's loopback (`localhost`, 127.0.0.0/8, ::1), any port."""
    host = urlsplit(f"//{host_header}").hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def cross_site(request: web.Request) -> bool:
    """An `Origin` header naming another host:port than the request's `Host`."""
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    return urlsplit(origin).netloc.lower() != request.host.lower()


def _changes_something(request: web.Request) -> bool:
    return request.method in ("POST", "PUT", "DELETE", "PATCH") or \
        request.headers.get("Upgrade", "").lower() == "websocket"


def login_page(message: str = "", status: int = 401) -> web.Response:
    note = f'<p class="error">{html.escape(message)}</p>' if message else ""
    body = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Weave Scope: log in</title><link rel="icon" href="data:,">
<style>body{{font:15px system-ui,sans-serif;background:#1a1a2e;color:#eee;display:flex;height:100vh;margin:0;
align-items:center;justify-content:center}}form{{background:#24243e;padding:2em 2.5em;border-radius:8px}}
input{{font:inherit;padding:.4em;width:18em}}button{{font:inherit;padding:.4em 1em}}.error{{color:#ff8080}}</style>
</head><body><form id="login" method="post" action="/login">
<h2>Weave Scope</h2><p>This app needs its token (<code>weave launch --scope-token</code>).</p>{note}
<input id="token" name="token" type="password" placeholder="token" autofocus autocomplete="off">
<button type="submit">Log in</button></form></body></html>
"""
    return web.Response(status=status, text=body, content_type="text/html",
                        headers={"Cache-Control": "no-store"})


def unauthorized() -> web.Response:
    return web.Response(status=401, text=UNAUTHORIZED_BODY, headers={
        "WWW-Authenticate": 'Bearer realm="weave-scope"', "Cache-Control": "no-store"})


def forbidden(reason: str) -> web.Response:
    return web.Response(status=403, text=f"403 forbidden: {reason}\n", headers={"Cache-Control": "no-store"})


def middleware(token: str | None, on_unauthorized: Callable[[web.Request], None] | None = None):
    """The aiohttp middleware enforcing the rules above; `on_unauthorized` is told of
    each request refused for want of the token (the app counts refused reports)."""

    @web.middleware
    async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
        if not token and not loopback_host(request.host):
            return forbidden("this app has no token, so it answers only on a loopback address")
        if _changes_something(request) and cross_site(request):
            return forbidden("cross-site request")
        if request.path in OPEN_PATHS or authorized(request, token):
            return await handler(request)
        if on_unauthorized is not None:
            on_unauthorized(request)
        if request.path == "/" and request.method == "GET":
            return login_page()
        return unauthorized()

    return guard


async def login(request: web.Request, token: str | None) -> web.StreamResponse:
    """`GET /login?token=<t>` or the form's POST: the session cookie, then the page."""
    if not token:
        raise web.HTTPSeeOther("/")
    if request.method == "POST":
        if (request.content_length or 0) > 4096:
            return login_page("That is not a token.")
        presented = str((await request.post()).get("token", ""))
    else:
        presented = request.query.get("token", "")
    if not presented:
        return login_page()
    if not _same(presented, token):
        return login_page("Wrong token.")
    resp = web.Response(status=303, headers={"Location": "/", "Cache-Control": "no-store"})
    resp.set_cookie(COOKIE, session_value(token), httponly=True, samesite="Strict", path="/")
    return resp
