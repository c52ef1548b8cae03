"""The CLI's client for a host's HTTP API (127.0.0.1:6784, as Weave Net's script uses)."""
from __future__ import annotations

import sys
import urllib.error
import urllib.parse
import urllib.request

from weavectl.errors import LaunchError

API = "http://127.0.0.1:6784"
TIMEOUT_S = 10.0


def call(method: str, path: str, form: dict[str, list[str]] | None = None, accept: str = "") -> str:
    data = urllib.parse.urlencode(form or {}, doseq=True).encode() if form is not None else None
    req = urllib.request.Request(API + path, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", "application/x-www-form-urlencoded")
    if accept:
        req.add_header("Accept", accept)
    tracing = sys.modules.get("shared.tracing")  # loaded only by a command that records a span
    for key, value in (tracing.inject().items() if tracing else ()):
        req.add_header(key, value)
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            return resp.read().decode()
    except urllib.error.HTTPError as exc:
        raise LaunchError(exc.read().decode(errors="replace").strip() or f"HTTP {exc.code}") from None
    except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
        raise LaunchError(f"cannot reach the weave router at {API} ({getattr(exc, 'reason', exc)})",
                          "is weave running on this host? start it with 'weave launch'") from None
