"""Controls on the wire (Scope's common/xfer), sans-I/O: what the app and the probe say
on the probe's control websocket (`GET /api/control/ws`, dialled by the probe).

Scope runs Go's net/rpc over that websocket with its JSONWebsocketCodec: every call is
two JSON text messages, a header then a value, the app being the rpc client and the
probe the server of one method, `control.Handle`:

    app -> probe  {"Request": {"ServiceMethod": "control.Handle", "Seq": 7}, "Response": null, "Value": null}
                  {"Request": null, "Response": null, "Value": {"AppID": .., "NodeID": .., "Control": ..,
                                                                "ControlArgs": {..}}}
    probe -> app  {"Request": null, "Response": {"ServiceMethod": "control.Handle", "Seq": 7, "Error": ""}, ...}
                  {"Request": null, "Response": null, "Value": {"value": .., "error": .., "pipe": ..,
                                                                "raw_tty": true, "resize_tty_control": ..}}

`Response.Error` is net/rpc's own failure (no such method); a control that failed says
so in the value's `error`. A pipe (a terminal) is then carried by two more websockets
that the app joins: the UI's `/api/pipe/<id>` and the probe's `/api/pipe/<id>/probe`,
binary messages both ways.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from shared.errors import RemoteProtocolError

SERVICE_METHOD = "control.Handle"
PROBE_ID_HEADER = "X-Scope-Probe-ID"


@dataclass(frozen=True)
class Request:
    """A control for one node (Scope's xfer.Request)."""

    node_id: str
    control: str
    args: dict[str, str] = field(default_factory=dict)
    app_id: str = ""

    def to_json(self) -> dict:
        return {"AppID": self.app_id, "NodeID": self.node_id, "Control": self.control, "ControlArgs": self.args}

    @classmethod
    def from_json(cls, value: Any) -> "Request":
        if not isinstance(value, dict) or not isinstance(value.get("NodeID"), str) \
                or not isinstance(value.get("Control"), str):
            raise RemoteProtocolError("a control request needs NodeID and Control strings", code="bad_control")
        args = value.get("ControlArgs") or {}
        if not isinstance(args, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in args.items()):
            raise RemoteProtocolError("ControlArgs must map strings to strings", code="bad_control")
        return cls(value["NodeID"], value["Control"], dict(args), str(value.get("AppID") or ""))


def response(value: Any = None, *, error: str = "", pipe: str = "", raw_tty: bool = False,
             resize_tty_control: str = "") -> dict:
    """A control's outcome (Scope's xfer.Response, its omitempty fields left out)."""
    out: dict[str, Any] = {}
    if value is not None:
        out["value"] = value
    for key, v in (("error", error), ("pipe", pipe), ("raw_tty", raw_tty), ("resize_tty_control", resize_tty_control)):
        if v:
            out[key] = v
    return out


def _dumps(value: dict) -> str:
    return json.dumps(value, separators=(",", ":"))


def request_frames(seq: int, request: Request) -> tuple[str, str]:
    return (_dumps({"Request": {"ServiceMethod": SERVICE_METHOD, "Seq": seq}, "Response": None, "Value": None}),
            _dumps({"Request": None, "Response": None, "Value": request.to_json()}))


def response_frames(seq: int, value: dict, rpc_error: str = "", method: str = SERVICE_METHOD) -> tuple[str, str]:
    return (_dumps({"Request": None, "Response": {"ServiceMethod": method, "Seq": seq, "Error": rpc_error},
                    "Value": None}),
            _dumps({"Request": None, "Response": None, "Value": value}))


@dataclass(frozen=True)
class Call:
    """A complete message: a request or response header and the value after it."""

    kind: str
    """"request" or "response"."""
    seq: int
    method: str
    error: str
    value: Any


class RpcReader:
    """Pairs each header message with the value message that follows it. `feed` returns
    the complete `Call`, or None after a header; RemoteProtocolError for anything that
    is not this protocol (the shell closes that websocket)."""

    def __init__(self) -> None:
        self._header: tuple[str, dict] | None = None

    def feed(self, text: str | bytes) -> Call | None:
        try:
            msg = json.loads(text)
        except ValueError:
            raise RemoteProtocolError("control message is not JSON", code="bad_control") from None
        if not isinstance(msg, dict):
            raise RemoteProtocolError("control message is not a JSON object", code="bad_control")
        if self._header is None:
            return self._take_header(msg)
        kind, header = self._header
        self._header = None
        return Call(kind, header["Seq"], str(header.get("ServiceMethod", "")), str(header.get("Error") or ""),
                    msg.get("Value"))

    def _take_header(self, msg: dict) -> None:
        for kind, key in (("request", "Request"), ("response", "Response")):
            header = msg.get(key)
            if isinstance(header, dict):
                if not isinstance(header.get("Seq"), int) or header["Seq"] < 0:
                    raise RemoteProtocolError(f"{key} header without a Seq", code="bad_control")
                self._header = (kind, header)
                return None
        raise RemoteProtocolError("expected a Request or Response header", code="bad_control")
