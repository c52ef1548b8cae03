"""Docker's remote plugin API, as Weave 2.8's plugin speaks it (weaveworks/weave
plugin/skel/listener.go, libnetwork's drivers/remote/api and ipams/remote/api): what
arrives (a POST of JSON to /Plugin.Activate, /NetworkDriver.<Method> or
/IpamDriver.<Method>) and what goes back.

Contract:
- `parse(path, body)` turns a request into one of the frozen request values below,
  or raises `BadRequest` (unknown method, JSON that is not an object, a field of the
  wrong type): the shell answers that as `{"Err": "..."}`.
- Every answer is a JSON object with HTTP 200; a refusal is `{"Err": reason}`, which
  Docker shows the user (as Weave's listener does; Docker treats any non-empty Err as
  a failure of the call). Methods that carry nothing back answer `{}`.
- Docker's field names are kept as Docker sends them (CamelCase); unknown fields are
  ignored, as Go's JSON decoder does.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

NETWORK_DRIVER = "NetworkDriver"
IPAM_DRIVER = "IpamDriver"
CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"


class BadRequest(Exception):
    """A request the plugin cannot read; the message is Docker's to show."""


@dataclass(frozen=True)
class Activate:
    """POST /Plugin.Activate: which drivers this socket implements."""


@dataclass(frozen=True)
class Simple:
    """A method whose request the plugin does not need (GetCapabilities, DiscoverNew,
    DiscoverDelete, EndpointOperInfo, ProgramExternalConnectivity, ...)."""

    driver: str
    method: str
    body: dict = field(default_factory=dict)


@dataclass(frozen=True)
class CreateNetwork:
    network_id: str
    options: dict[str, str]
    """The user's --opt values (Docker's com.docker.network.generic), strings only (Weave's stringOptions)."""
    ipv4_pools: tuple[str, ...]


@dataclass(frozen=True)
class DeleteNetwork:
    network_id: str


@dataclass(frozen=True)
class CreateEndpoint:
    network_id: str
    endpoint_id: str
    address: str
    """ip/len the IPAM driver gave (Docker fills Interface.Address)."""
    mac: str
    has_interface: bool
    """False: Docker asks the driver to make up the interface's addresses, which Weave refuses."""


@dataclass(frozen=True)
class DeleteEndpoint:
    network_id: str
    endpoint_id: str


@dataclass(frozen=True)
class Join:
    network_id: str
    endpoint_id: str
    sandbox_key: str


@dataclass(frozen=True)
class Leave:
    network_id: str
    endpoint_id: str


@dataclass(frozen=True)
class RequestPool:
    address_space: str
    pool: str
    sub_pool: str
    options: dict[str, str]
    v6: bool


@dataclass(frozen=True)
class ReleasePool:
    pool_id: str


@dataclass(frozen=True)
class RequestAddress:
    pool_id: str
    address: str
    """A specific address asked for ('' = any)."""
    options: dict[str, str]


@dataclass(frozen=True)
class ReleaseAddress:
    pool_id: str
    address: str


Request = (Activate | Simple | CreateNetwork | DeleteNetwork | CreateEndpoint | DeleteEndpoint | Join | Leave
           | RequestPool | ReleasePool | RequestAddress | ReleaseAddress)

NETWORK_METHODS = ("GetCapabilities", "CreateNetwork", "DeleteNetwork", "CreateEndpoint", "DeleteEndpoint",
                   "EndpointOperInfo", "Join", "Leave", "DiscoverNew", "DiscoverDelete",
                   "ProgramExternalConnectivity", "RevokeExternalConnectivity", "AllocateNetwork", "FreeNetwork")
IPAM_METHODS = ("GetCapabilities", "GetDefaultAddressSpaces", "RequestPool", "ReleasePool", "RequestAddress",
                "ReleaseAddress")


def parse(path: str, body: bytes) -> Request:
    """The request at `path` (e.g. /NetworkDriver.Join) with JSON `body`."""
    name = path.lstrip("/")
    if name == "Plugin.Activate":
        return Activate()
    driver, _, method = name.partition(".")
    known = {NETWORK_DRIVER: NETWORK_METHODS, IPAM_DRIVER: IPAM_METHODS}.get(driver, ())
    if method not in known:
        raise BadRequest(f"unknown method {name!r}")
    data = _object(body)
    build = _BUILDERS.get((driver, method))
    return build(data) if build else Simple(driver, method, data)


def _object(body: bytes) -> dict:
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except ValueError as exc:
        raise BadRequest(f"Unable to decode JSON payload: {exc}") from None
    if not isinstance(data, dict):
        raise BadRequest("Unable to decode JSON payload: not an object")
    return data


def _str(data: dict, key: str, required: bool = True) -> str:
    value = data.get(key)
    if value is None or value == "":
        if required:
            raise BadRequest(f"{key} missing")
        return ""
    if not isinstance(value, str):
        raise BadRequest(f"{key} must be a string")
    return value


def _strings(value) -> dict[str, str]:
    """Only string values of a JSON object (Weave's stringOptions)."""
    return {k: v for k, v in value.items() if isinstance(v, str)} if isinstance(value, dict) else {}


def _create_network(d: dict) -> CreateNetwork:
    options = d.get("Options") or {}
    generic = options.get("com.docker.network.generic") if isinstance(options, dict) else None
    pools = tuple(p.get("Pool", "") for p in d.get("IPv4Data") or () if isinstance(p, dict))
    return CreateNetwork(_str(d, "NetworkID"), _strings(generic), pools)


def _create_endpoint(d: dict) -> CreateEndpoint:
    iface = d.get("Interface")
    if iface is not None and not isinstance(iface, dict):
        raise BadRequest("Interface must be an object")
    iface = iface or {}
    return CreateEndpoint(_str(d, "NetworkID"), _str(d, "EndpointID"), _str(iface, "Address", False),
                          _str(iface, "MacAddress", False), bool(d.get("Interface")))


def _request_pool(d: dict) -> RequestPool:
    return RequestPool(_str(d, "AddressSpace", False), _str(d, "Pool", False), _str(d, "SubPool", False),
                       _strings(d.get("Options")), bool(d.get("V6")))


_BUILDERS = {
    (NETWORK_DRIVER, "CreateNetwork"): _create_network,
    (NETWORK_DRIVER, "DeleteNetwork"): lambda d: DeleteNetwork(_str(d, "NetworkID")),
    (NETWORK_DRIVER, "CreateEndpoint"): _create_endpoint,
    (NETWORK_DRIVER, "DeleteEndpoint"): lambda d: DeleteEndpoint(_str(d, "NetworkID"), _str(d, "EndpointID")),
    (NETWORK_DRIVER, "Join"): lambda d: Join(_str(d, "NetworkID"), _str(d, "EndpointID"), _str(d, "SandboxKey", False)),
    (NETWORK_DRIVER, "Leave"): lambda d: Leave(_str(d, "NetworkID"), _str(d, "EndpointID")),
    (IPAM_DRIVER, "RequestPool"): _request_pool,
    (IPAM_DRIVER, "ReleasePool"): lambda d: ReleasePool(_str(d, "PoolID")),
    (IPAM_DRIVER, "RequestAddress"): lambda d: RequestAddress(_str(d, "PoolID"), _str(d, "Address", False),
                                                              _strings(d.get("Options"))),
    (IPAM_DRIVER, "ReleaseAddress"): lambda d: ReleaseAddress(_str(d, "PoolID"), _str(d, "Address")),
}


def error(reason: str) -> dict:
    return {"Err": reason}


def encode(answer: dict) -> bytes:
    return json.dumps(answer).encode() + b"\n"
