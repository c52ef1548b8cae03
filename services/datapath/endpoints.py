"""The Docker plugin's endpoint interfaces (Weave 2.8's plugin/net/driver.go,
CreateEndpoint and DeleteEndpoint), made by the datapath because it owns the bridge.

- `create(endpoint_id)`: a veth `vethwl<id9>` (on the bridge, up, the bridge's MTU)
  <-> `vethwg<id9>` (left down in the host namespace: Docker moves it into the
  container's sandbox at Join and names it ethwe<N>), `<id9>` being the first 9
  characters of Docker's endpoint id (IFNAMSIZ less "vethwl" and the NUL, as Weave).
  Idempotent: an existing pair is reused. Returns the names and the guest's MAC, which
  Docker records as the endpoint's.
- `delete(endpoint_id)`: removes the pair if it is still there (once Docker moved the
  guest into a sandbox that has gone, the pair went with it). Weave's plugin before 2.0
  named host ends `vethwl<id5>`; those are removed too.
Once the container runs, the plugin asks the datapath to attach it with `ipam=False`:
attach.py adopts the interface (its host end found as the peer of ethwe<N>).
All block; they take the host namespace (None: the calling thread's).
"""
from __future__ import annotations

from dataclasses import dataclass

from services.datapath.bridge import BRIDGE, DOCKER_VETH_PREFIX, Host, bridge_link
from services.datapath.netns import BadRequest, using_namespace
from services.datapath.sleeve.offload import GSO_MAX_SIZE
from services.datapath.veth import create_veth, delete_link, find_link
from shared.weave.docker_veth import veth_names


@dataclass(frozen=True)
class Endpoint:
    host_ifname: str
    guest_ifname: str
    mac: str


def names(endpoint_id: str) -> tuple[str, str]:
    """(host end, guest end) of an endpoint's veth (shared/weave/docker_veth.py);
    BadRequest for something that is not an endpoint id."""
    try:
        return veth_names(endpoint_id)
    except ValueError as exc:
        raise BadRequest(str(exc), endpoint=endpoint_id) from None


def create(endpoint_id: str, *, host: Host = None, bridge: str = BRIDGE) -> Endpoint:
    host_name, guest_name = names(endpoint_id)
    with using_namespace(host) as hns, hns.iproute() as ipr:
        guest = find_link(ipr, guest_name)
        if guest is None or find_link(ipr, host_name) is None:
            delete_link(ipr, host_name)  # half a pair: start again
            br = bridge_link(ipr, bridge)
            create_veth(ipr, host_name, guest_name, mtu=br.get("mtu"), master=br["index"])
            guest = find_link(ipr, guest_name)
            ipr.link("set", index=guest["index"], gso_max_size=GSO_MAX_SIZE)
        return Endpoint(host_name, guest_name, guest.get("address"))


def delete(endpoint_id: str, *, host: Host = None) -> bool:
    """True if a pair was removed."""
    host_name, _ = names(endpoint_id)
    with using_namespace(host) as hns, hns.iproute() as ipr:
        removed = delete_link(ipr, host_name)
        return delete_link(ipr, DOCKER_VETH_PREFIX + endpoint_id[:5]) or removed
