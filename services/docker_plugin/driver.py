"""The network driver's decisions (Weave 2.8's plugin/net/driver.go), sans I/O: the
networks it knows, the answers to Docker's NetworkDriver calls. The shell makes the
veth (through the datapath) and looks up networks Docker created before this process
started (`learn`).

Rules, as Weave's:
- A network is ours when its driver is this plugin's name (`weave`, or `weavemesh`).
  Its one option is `works.weave.multicast` (`--opt works.weave.multicast` alone means
  on): a 224.0.0.0/4 route through the container's weave interface. Any other option
  is logged and ignored.
- CreateEndpoint needs Docker to pass the interface (its address from the IPAM driver):
  a driver that invents addresses is not supported. The answer carries the MAC of the
  veth the datapath made, since Docker has none.
- Join hands Docker the guest end of the endpoint's veth, to be moved into the
  sandbox and named ethwe<N>; no gateway (as Weave: Docker then adds its own
  docker_gwbridge interface for traffic leaving the host).
- Scope is local: each engine keeps its own networks (Weave 2.8's `weave` driver was
  global scope, for Swarm's store; these engines have none, and the mesh joins the
  hosts' networks anyway).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from services.docker_plugin import remote_api as api

log = logging.getLogger(__name__)

MULTICAST_OPTION = "works.weave.multicast"
CONTAINER_IFNAME = "ethwe"
"""Docker names the interface DstPrefix + an index: ethwe0 on a container's first weave network."""
ROUTE_CONNECTED = 1  # libnetwork types.CONNECTED


class Refused(Exception):
    """A call the driver says no to; Docker shows the message."""


@dataclass(frozen=True)
class Network:
    ours: bool
    multicast: bool = False


def parse_options(options: dict[str, str]) -> Network:
    multicast = False
    for key, value in options.items():
        if key == MULTICAST_OPTION:
            multicast = _bool(value, key)
        else:
            log.warning("network option %s=%s is not one of ours: ignored", key, value)
    return Network(ours=True, multicast=multicast)


def _bool(value: str, key: str) -> bool:
    if value == "":
        return True  # `--opt works.weave.multicast` alone turns it on
    low = value.lower()
    if low in ("1", "t", "true"):
        return True
    if low in ("0", "f", "false"):
        return False
    raise Refused(f"unrecognized value {value!r} for option {key}")


class NetworkDriver:
    def __init__(self, names: tuple[str, ...] = ("weave", "weavemesh")) -> None:
        self.names = names
        """Driver names that are this plugin (one per socket)."""
        self.networks: dict[str, Network] = {}

    def activate(self) -> dict:
        return {"Implements": [api.NETWORK_DRIVER, api.IPAM_DRIVER]}

    def capabilities(self) -> dict:
        return {"Scope": "local", "ConnectivityScope": "global"}

    def create_network(self, req: api.CreateNetwork) -> dict:
        self.networks[req.network_id] = parse_options(req.options)
        return {}

    def learn(self, network_id: str, driver: str, options: dict[str, str]) -> Network:
        """What Docker says of a network this process did not see created."""
        net = parse_options(options) if driver in self.names else Network(ours=False)
        self.networks[network_id] = net
        return net

    def delete_network(self, req: api.DeleteNetwork) -> dict:
        self.networks.pop(req.network_id, None)
        return {}

    def check_endpoint(self, req: api.CreateEndpoint) -> None:
        if not req.has_interface:
            raise Refused("Not supported: creating an interface from within CreateEndpoint")

    @staticmethod
    def endpoint_created(req: api.CreateEndpoint, mac: str) -> dict:
        """Docker takes the MAC only when it had none (it refuses a changed one)."""
        return {} if req.mac else {"Interface": {"MacAddress": mac}}

    def join(self, req: api.Join, guest_ifname: str) -> dict:
        net = self.networks.get(req.network_id)
        if net is None:
            raise LookupError(req.network_id)  # the shell learns it from Docker, then asks again
        answer: dict = {"InterfaceName": {"SrcName": guest_ifname, "DstPrefix": CONTAINER_IFNAME}}
        if net.multicast:
            answer["StaticRoutes"] = [{"Destination": "224.0.0.0/4", "RouteType": ROUTE_CONNECTED}]
        return answer

    @staticmethod
    def endpoint_info() -> dict:
        return {"Value": {}}
