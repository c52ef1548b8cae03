"""POSTs the probe's reports to a Scope app elsewhere (`--scope-target`), as Scope's
probe/appclient does: `POST /api/report`, gzipped msgpack, Scope's headers.

One `AppClient` per target. `offer(body)` never blocks: the client keeps only the newest
report not yet sent (a slow or absent app costs one report's memory, and gets the
freshest one when it comes back), and one task sends, with a timeout. The outcome of
each attempt is counted, not raised: an app that is down must not stop the probe.
"""
from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlsplit

import aiohttp

log = logging.getLogger(__name__)
DEFAULT_PORT = 4040  # Scope app's default (--app.http.address :4040)
POST_TIMEOUT_S = 10.0


def report_url(target: str) -> str:
    """`host`, `host:port` or `http(s)://host[:port][/prefix]` -> the report URL
    (Scope's probe targets; port 4040 when none is given over plain HTTP)."""
    url = target if "://" in target else f"http://{target}"
    parts = urlsplit(url)
    if not parts.hostname:
        raise ValueError(f"scope target {target!r} has no host")
    netloc = parts.netloc
    if parts.port is None and parts.scheme == "http":
        netloc = f"{netloc}:{DEFAULT_PORT}"
    return f"{parts.scheme}://{netloc}{parts.path.rstrip('/')}/api/report"


def report_headers(probe_id: str, version: str, token: str | None) -> dict[str, str]:
    """Scope's probe headers, in its order (tests/fixtures/scope-1.13 report-*.headers.json)."""
    return {"User-Agent": f"Scope_Probe/{version}", "Authorization": f"Scope-Probe token={token or ''}",
            "Content-Encoding": "gzip", "Content-Type": "application/msgpack", "X-Scope-Probe-Id": probe_id,
            "X-Scope-Probe-Version": version}


class AppClient:
    def __init__(self, target: str, headers: dict[str, str]) -> None:
        self.target, self.url, self.headers = target, report_url(target), headers
        self._next: bytes | None = None
        self._ready = asyncio.Event()
        self.sent = self.failed = self.sent_bytes = 0
        self.last_error = ""

    def offer(self, body: bytes) -> None:
        """Send `body` next (replacing a report still waiting)."""
        self._next = body
        self._ready.set()

    async def run(self, session: aiohttp.ClientSession) -> None:
        """Send what is offered, one report at a time, until cancelled."""
        while True:
            await self._ready.wait()
            self._ready.clear()
            body, self._next = self._next, None
            if body is not None:
                await self._post(session, body)

    async def _post(self, session: aiohttp.ClientSession, body: bytes) -> None:
        try:
            async with session.post(self.url, data=body, headers=self.headers,
                                    timeout=aiohttp.ClientTimeout(total=POST_TIMEOUT_S)) as resp:
                await resp.read()
                if resp.status // 100 != 2:
                    raise aiohttp.ClientResponseError(resp.request_info, (), status=resp.status,
                                                      message=resp.reason or "")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            self.failed += 1
            if str(exc) != self.last_error:
                log.warning("cannot send a report to the Scope app at %s: %s", self.url, exc)
            self.last_error = str(exc)
            return
        self.sent += 1
        self.sent_bytes += len(body)
        self.last_error = ""
