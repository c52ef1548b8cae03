"""Facts the datapath publishes about containers (weave.events.containers).

dns registers and tombstones names from them; npc counts attached containers as pods
(of `namespace`, with `labels`). Every host's datapath publishes only its own
containers; owners that need all hosts' containers gossip them on their channel.
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from shared.schemas.base import Message


class ContainerEvent(Message):
    """A container was attached, re-attached with more addresses, or detached."""

    kind: Literal["attached", "detached"] = Field(description="What happened.")
    container_id: str = Field(description="The container's id (namespace name, or weave:expose).")
    cidrs: tuple[str, ...] = Field(description="Its addresses as ip/len after the change (empty once detached).")
    mac: str = Field("", description="MAC of its ethwe interface.")
    fqdn: str = Field("", description="DNS name given with --name, '' if none.")
    labels: dict[str, str] = Field(default_factory=dict, description="--label k=v pairs (NetworkPolicy podSelector).")
    namespace: str = Field("default", description="Policy namespace given with --namespace.")
    netns_inode: int = Field(0, description="Inode of its network namespace (/proc/<pid>/ns/net), which tells its "
                             "processes (Scope's probe); 0 for weave:expose and when not known.")
    ipam_ident: str = Field("", description="The IPAM ident its addresses are held under: '' = its container_id; "
                            "'_' = each under itself (the Docker plugin's IPAM driver, as Weave's).")


class ContainersRequest(Message):
    """Ask the datapath for every attached container (weave.datapath.containers)."""


class ContainersReply(Message):
    """Every attached container, as `attached` events."""

    containers: tuple[ContainerEvent, ...] = Field(description="One event per attached container.")


# -- weave attach / detach / ps / expose / hide (weave.datapath.<verb>) -------------------
# CONTAINER is how `weave attach` names a container here: an `ip netns` name, a path to a
# namespace file (/var/run/netns/x, /proc/<pid>/ns/net) or a pid. ADDR is Weave's syntax:
# `ip/len` (that address; claimed from IPAM when it runs), `net:<cidr>` (allocate one in
# that subnet) or `net:default` (allocate one in IPAM's default subnet); no ADDR means
# net:default. Errors: bad_request (malformed), not_found (no such namespace, not
# attached, weave not launched), conflict (address in use, interface not ours, another
# --name), unavailable (IPAM needed and not answering).

class Attachment(Message):
    """One line of `weave ps`: a container's weave interface, or the bridge (weave:expose)."""

    container_id: str = Field(description="The container as attached (namespace name, pid or path), or weave:expose.")
    mac: str = Field(description="MAC of its ethwe (the bridge's for weave:expose).")
    cidrs: tuple[str, ...] = Field(description="Its addresses, ip/len, in the kernel's order.")
    fqdn: str = Field("", description="Name registered in weaveDNS, '' if none.")
    ifname: str = Field("", description="Interface inside the container (ethwe), or the bridge.")
    host_ifname: str = Field("", description="vethwepl<id> on the bridge, or the bridge.")
    added: tuple[str, ...] = Field((), description="In a reply to attach/expose: the addresses this request gave.")


class AttachRequest(Message):
    """weave.datapath.attach: connect a container to the weave network (or add addresses);
    replied with its Attachment."""

    container: str = Field(description="CONTAINER (see above).")
    addrs: tuple[str, ...] = Field((), description="ADDRs (see above); empty = net:default.")
    fqdn: str = Field("", description="--name: register this name in weaveDNS.")
    labels: dict[str, str] = Field(default_factory=dict, description="--label k=v pairs (npc podSelector).")
    namespace: str = Field("default", description="--namespace: its policy namespace.")
    multicast_route: bool = Field(True, description="Route 224.0.0.0/4 via ethwe (--no-multicast-route: False).")
    ifname: str = Field("ethwe", description="Interface name inside the container (the CNI plugin's CNI_IFNAME).")
    container_id: str = Field("", description="Record the container under this id (a Docker container's full id); "
                              "'' = as CONTAINER names it.")
    ipam: bool = Field(True, description="False: the addresses are someone else's to allocate and release (the "
                       "Docker plugin's IPAM driver, Docker's own): only explicit ADDRs, none claimed or released "
                       "here. The interface may then be an existing Docker plugin endpoint's (adopted).")


class EndpointRequest(Message):
    """weave.datapath.endpoint_create / endpoint_delete: the veth of a Docker plugin
    endpoint (Docker's CreateEndpoint / DeleteEndpoint); create is replied with an
    EndpointReply, delete with Ok."""

    endpoint_id: str = Field(description="Docker's endpoint id (hex).")


class EndpointReply(Message):
    host_ifname: str = Field(description="vethwl<id> on the weave bridge.")
    guest_ifname: str = Field(description="vethwg<id>, in the host namespace until Docker moves it into the container.")
    mac: str = Field(description="The guest end's MAC (the endpoint's).")


class DetachRequest(Message):
    """weave.datapath.detach: remove addresses, or the whole weave interface."""

    container: str = Field(description="CONTAINER (see above).")
    addrs: tuple[str, ...] = Field((), description="ip/len or net:<cidr> to remove; empty = everything.")


class DetachReply(Message):
    container_id: str = Field(description="The container as it was attached.")
    removed: tuple[str, ...] = Field(description="Addresses removed, ip/len.")
    remaining: tuple[str, ...] = Field(description="Addresses left; empty when the interface is gone.")


class PsRequest(Message):
    """weave.datapath.ps: the attached containers (weave ps)."""

    containers: tuple[str, ...] = Field((), description="Only these CONTAINERs (or weave:expose); empty = all.")


class PsReply(Message):
    attachments: tuple[Attachment, ...] = Field(description="weave:expose first when the bridge has addresses.")


class ExposeRequest(Message):
    """weave.datapath.expose: give the host addresses on the weave bridge (weave expose),
    replied with the bridge's Attachment (container_id weave:expose)."""

    addrs: tuple[str, ...] = Field((), description="ADDRs (see above); empty = net:default.")
    fqdn: str = Field("", description="-h: register this name for the host's address in weaveDNS.")
    masquerade: bool = Field(True, description="NAT containers' traffic to elsewhere through this host (weave "
                             "expose without --without-masquerade; HTTP ?skipNAT=true sets False).")


class HideRequest(Message):
    """weave.datapath.hide: remove addresses from the bridge (weave hide); replied with a
    DetachReply for weave:expose."""

    addrs: tuple[str, ...] = Field((), description="ip/len or net:<cidr> to remove; empty = every exposed address.")
