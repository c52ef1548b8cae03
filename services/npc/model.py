"""The Kubernetes objects weave-npc watches: Namespace, Pod, networking.k8s.io/v1 NetworkPolicy.

The models take the JSON the API server serves (or a YAML manifest) as is. Fields we do
not use are ignored, not rejected: the API grows and we must keep working. They check
shape only; meaning (named ports, CIDRs, protocols, selector syntax) is checked by the
analyser, which rejects one policy with a reason and leaves the others alone.

Absent and `null` collections both read as empty, like Go's nil slices and maps, except
where weave tells them apart (`NetworkPolicySpec.egress`: see `NetworkPolicy.is_egress`).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from shared.errors import RemoteProtocolError

INGRESS = "Ingress"
EGRESS = "Egress"


class _K8sObject(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, populate_by_name=True)


def _none_to_empty_dict(value: Any) -> Any:
    return {} if value is None else value


def _none_to_empty_list(value: Any) -> Any:
    return [] if value is None else value


class ObjectMeta(_K8sObject):
    name: str = ""
    namespace: str = ""
    uid: str = ""
    labels: dict[str, str] = Field(default_factory=dict)

    _labels = field_validator("labels", mode="before")(_none_to_empty_dict)


class LabelSelectorRequirement(_K8sObject):
    key: str
    operator: str
    values: list[str] = Field(default_factory=list)

    _values = field_validator("values", mode="before")(_none_to_empty_list)


class LabelSelector(_K8sObject):
    """`{}` selects everything; an absent selector is `None` where it is optional."""

    match_labels: dict[str, str] = Field(default_factory=dict, alias="matchLabels")
    match_expressions: list[LabelSelectorRequirement] = Field(
        default_factory=list, alias="matchExpressions"
    )

    _labels = field_validator("match_labels", mode="before")(_none_to_empty_dict)
    _exprs = field_validator("match_expressions", mode="before")(_none_to_empty_list)


class IPBlock(_K8sObject):
    cidr: str
    except_: list[str] = Field(default_factory=list, alias="except")

    _except = field_validator("except_", mode="before")(_none_to_empty_list)


class NetworkPolicyPort(_K8sObject):
    """`port` is an int, a named port (a string), or absent (all ports)."""

    protocol: str | None = None
    port: Union[int, str, None] = None
    end_port: int | None = Field(default=None, alias="endPort")


class NetworkPolicyPeer(_K8sObject):
    pod_selector: LabelSelector | None = Field(default=None, alias="podSelector")
    namespace_selector: LabelSelector | None = Field(default=None, alias="namespaceSelector")
    ip_block: IPBlock | None = Field(default=None, alias="ipBlock")


class NetworkPolicyIngressRule(_K8sObject):
    """Empty `from_` allows every source; empty `ports` every port."""

    from_: list[NetworkPolicyPeer] = Field(default_factory=list, alias="from")
    ports: list[NetworkPolicyPort] = Field(default_factory=list)

    _from = field_validator("from_", "ports", mode="before")(_none_to_empty_list)


class NetworkPolicyEgressRule(_K8sObject):
    """Empty `to` allows every destination; empty `ports` every port."""

    to: list[NetworkPolicyPeer] = Field(default_factory=list)
    ports: list[NetworkPolicyPort] = Field(default_factory=list)

    _to = field_validator("to", "ports", mode="before")(_none_to_empty_list)


class NetworkPolicySpec(_K8sObject):
    """`egress` stays `None` when absent: weave tells "absent" from "[]" (is_egress)."""

    pod_selector: LabelSelector = Field(default_factory=LabelSelector, alias="podSelector")
    policy_types: list[str] = Field(default_factory=list, alias="policyTypes")
    ingress: list[NetworkPolicyIngressRule] = Field(default_factory=list)
    egress: list[NetworkPolicyEgressRule] | None = None

    _types = field_validator("policy_types", "ingress", mode="before")(_none_to_empty_list)


class Namespace(_K8sObject):
    kind: str = "Namespace"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def labels(self) -> dict[str, str]:
        return self.metadata.labels


class PodSpec(_K8sObject):
    host_network: bool = Field(default=False, alias="hostNetwork")


class PodStatus(_K8sObject):
    pod_ip: str = Field(default="", alias="podIP")
    phase: str = ""

    @field_validator("pod_ip", "phase", mode="before")
    @classmethod
    def _none_to_blank(cls, value: Any) -> Any:
        return "" if value is None else value


class Pod(_K8sObject):
    kind: str = "Pod"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: PodSpec = Field(default_factory=PodSpec)
    status: PodStatus = Field(default_factory=PodStatus)

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "default"

    @property
    def uid(self) -> str:
        """Identity across events; manifests without a uid fall back to ns/name."""
        return self.metadata.uid or f"{self.namespace}/{self.metadata.name}"

    @property
    def ip(self) -> str:
        return self.status.pod_ip

    @property
    def has_ip(self) -> bool:
        """Counts for policy (weave's hasIP): alive, addressed, own network namespace."""
        return (
            self.status.phase not in ("Succeeded", "Failed")
            and bool(self.status.pod_ip)
            and not self.spec.host_network
        )


class NetworkPolicy(_K8sObject):
    kind: str = "NetworkPolicy"
    metadata: ObjectMeta = Field(default_factory=ObjectMeta)
    spec: NetworkPolicySpec = Field(default_factory=NetworkPolicySpec)

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def namespace(self) -> str:
        return self.metadata.namespace or "default"

    @property
    def uid(self) -> str:
        return self.metadata.uid or f"{self.namespace}/{self.metadata.name}"

    @property
    def policy_types(self) -> tuple[str, ...]:
        """policyTypes, defaulted as the API server does when the list is empty:
        Ingress, plus Egress if the policy has egress rules."""
        if self.spec.policy_types:
            return tuple(self.spec.policy_types)
        return (INGRESS, EGRESS) if self.spec.egress else (INGRESS,)

    @property
    def is_egress(self) -> bool:
        """weave's isEgressNetworkPolicy: Egress in policyTypes, or `egress` present
        (even empty). Its first sighting installs the default egress DROP."""
        return EGRESS in self.policy_types or self.spec.egress is not None


KubeObject = Union[Namespace, Pod, NetworkPolicy]
_KINDS: dict[str, type[BaseModel]] = {"Namespace": Namespace, "Pod": Pod, "NetworkPolicy": NetworkPolicy}


def parse_object(raw: Mapping[str, Any]) -> KubeObject:
    """One API object (dict from JSON/YAML) by its `kind`.

    Raises RemoteProtocolError (code "bad_object") for an unknown kind or a shape
    that does not fit; the caller drops that object, not the process.
    """
    kind = raw.get("kind") if isinstance(raw, Mapping) else None
    model = _KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise RemoteProtocolError(f"unsupported object kind {kind!r}", code="bad_object", kind=kind)
    try:
        return model.model_validate(raw)  # type: ignore[return-value]
    except ValidationError as exc:
        raise RemoteProtocolError(
            f"malformed {kind}: {exc.error_count()} error(s)", code="bad_object", kind=kind,
            errors=exc.errors(include_url=False),
        ) from exc


def load_manifests(text: str) -> list[KubeObject]:
    """Every object in a multi-document YAML (or JSON) text; `kind: List` is flattened."""
    import yaml  # here: only manifests need it (16 ms of every launch's start-up otherwise)

    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise RemoteProtocolError(f"unparseable manifest: {exc}", code="bad_object") from exc
    return [parse_object(raw) for raw in _flatten(documents)]


def _flatten(documents: Iterable[Any]) -> Iterable[Mapping[str, Any]]:
    for doc in documents:
        if doc is None:
            continue
        if isinstance(doc, Mapping) and doc.get("kind") == "List":
            yield from _flatten(doc.get("items") or [])
        else:
            yield doc
