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


class ContainersRequest(Message):
    """Ask the datapath for every attached container (weave.datapath.containers)."""


class ContainersReply(Message):
    """Every attached container, as `attached` events."""

    containers: tuple[ContainerEvent, ...] = Field(description="One event per attached container.")
