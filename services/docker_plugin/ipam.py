"""The IPAM driver's decisions (Weave 2.8's plugin/ipam/driver.go), sans I/O: pools are
named so that every later call can be answered from the name alone, addresses come
from weave IPAM (the shell asks it over the bus).

Rules, as Weave's:
- Address spaces `weavelocal` and `weaveglobal`.
- RequestPool: no pool given means IPAM's default subnet; a pool (and a sub-pool to
  allocate in) may be given (`docker network create --subnet ... --ip-range ...`).
  The pool id is `weave-<subnet>-<range>`. Its data names the subnet's network
  address as the gateway, so Docker asks no gateway address of us. IPv6 is refused.
- RequestAddress: a given address is claimed, else one is allocated in the range;
  either way under IPAM's ident `_`, which files it under its own address (Weave's
  "no container" ident): Docker does not say which container it is for.
- ReleaseAddress frees it by that ident (the address itself).
"""
from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from services.docker_plugin import remote_api as api
from services.docker_plugin.driver import Refused

ADDRESS_SPACES = {"LocalDefaultAddressSpace": "weavelocal", "GlobalDefaultAddressSpace": "weaveglobal"}
GATEWAY = "com.docker.network.gateway"
NO_CONTAINER = "_"


def capabilities() -> dict:
    return {"RequiresMACAddress": False}


def _network(text: str, what: str) -> IPv4Network:
    try:
        return IPv4Network(text, strict=False)
    except ValueError:
        raise Refused(f"invalid {what} {text!r}") from None


def pool(req: api.RequestPool, default_subnet: str) -> dict:
    """The answer to RequestPool; `default_subnet` is IPAM's (used when no pool is given)."""
    if req.v6:
        raise Refused("weave IPAM does not allocate IPv6 addresses")
    subnet = _network(req.pool or default_subnet, "pool")
    iprange = _network(req.sub_pool, "sub-pool") if req.sub_pool else subnet
    if not iprange.subnet_of(subnet):
        raise Refused(f"sub-pool {iprange} is not inside pool {subnet}")
    return {"PoolID": f"weave-{subnet}-{iprange}", "Pool": str(subnet), "Data": {GATEWAY: str(subnet)}}


@dataclass(frozen=True)
class Plan:
    """What RequestAddress asks of IPAM: `claim` a.b.c.d/len, or `allocate` in `subnet`."""

    verb: str
    cidr: str
    """claim: the address with the pool's length; allocate: the range to allocate in."""
    prefixlen: int
    """The pool's: the answer's length (an allocation in a range comes back with the range's)."""


def parse_pool_id(pool_id: str) -> tuple[IPv4Network, IPv4Network]:
    parts = pool_id.split("-")
    if len(parts) != 3 or parts[0] != "weave":
        raise Refused(f"Unrecognized pool ID: {pool_id}")
    return _network(parts[1], "pool"), _network(parts[2], "range")


def address_plan(req: api.RequestAddress) -> Plan:
    subnet, iprange = parse_pool_id(req.pool_id)
    if req.address:
        try:
            ip = IPv4Address(req.address.split("/")[0])
        except ValueError:
            raise Refused(f"invalid address {req.address!r}") from None
        if ip not in subnet:
            raise Refused(f"address {ip} is not in pool {subnet}")
        return Plan("claim", f"{ip}/{subnet.prefixlen}", subnet.prefixlen)
    return Plan("allocate", str(iprange), subnet.prefixlen)


def address_answer(cidr: str, plan: Plan) -> dict:
    """IPAM's answer (ip/len) with the pool's prefix length (Weave fixes up the mask)."""
    return {"Address": f"{cidr.split('/')[0]}/{plan.prefixlen}", "Data": {}}


def release_ident(req: api.ReleaseAddress) -> str:
    """The IPAM ident the address is held under (NO_CONTAINER files it under itself)."""
    try:
        return str(IPv4Address(req.address.split("/")[0]))
    except ValueError:
        raise Refused(f"invalid address {req.address!r}") from None
