"""Label selectors, their Kubernetes string form, and weave's selector specs.

The string form matters beyond display: weave names a selector's ipset after it
(`shortName(ns + ":" + selector.String())`) and writes it into rule comments. So we
reproduce apimachinery's `LabelSelectorAsSelector(...).String()`:
- matchLabels become `k=v`, matchExpressions `k in (a,b)`, `k notin (a,b)`, `k`, `!k`;
- requirements are sorted by key (a stable sort, as Go's is for selectors this small;
  matchLabels come before matchExpressions with the same key), joined by ",";
- values of in/notin are printed sorted; an empty selector prints "".
weave:npc/selector.go, k8s.io/apimachinery/pkg/labels/selector.go.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from shared.errors import RemoteProtocolError

from .ipset import IPSetType
from .model import LabelSelector
from .shortname import ipset_name

_OPERATORS = {"In": "in", "NotIn": "notin", "Exists": "exists", "DoesNotExist": "!"}
_NAME = r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE = re.compile(rf"^({_NAME})?$")
_LABEL_KEY = re.compile(
    rf"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?{_NAME}$"
)


class SelectorError(RemoteProtocolError):
    """A selector Kubernetes itself would refuse; the policy using it is rejected."""

    code = "bad_selector"


@dataclass(frozen=True)
class Requirement:
    """One term. `operator` is "=", "in", "notin", "exists" or "!" (does not exist)."""

    key: str
    operator: str
    values: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.operator == "exists":
            return self.key
        if self.operator == "!":
            return "!" + self.key
        if self.operator == "=":
            return f"{self.key}={self.values[0]}"
        return f"{self.key} {self.operator} ({','.join(sorted(self.values))})"

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "exists":
            return present
        if self.operator == "!":
            return not present
        if self.operator == "notin":
            return not present or labels[self.key] not in self.values
        return present and labels[self.key] in self.values


@dataclass(frozen=True)
class Selector:
    """A parsed selector; no requirements selects everything."""

    requirements: tuple[Requirement, ...] = ()

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)

    def matches(self, labels: Mapping[str, str]) -> bool:
        return all(r.matches(labels) for r in self.requirements)

    @classmethod
    def parse(cls, selector: LabelSelector) -> "Selector":
        """Raises SelectorError for an unknown operator, bad values or bad label syntax."""
        terms = [_requirement(k, "=", (v,)) for k, v in sorted(selector.match_labels.items())]
        for expr in selector.match_expressions:
            operator = _OPERATORS.get(expr.operator)
            if operator is None:
                raise SelectorError(
                    f"{expr.operator!r} is not a valid pod selector operator", operator=expr.operator
                )
            terms.append(_requirement(expr.key, operator, tuple(expr.values)))
        return cls(tuple(sorted(terms, key=lambda r: r.key)))


def _requirement(key: str, operator: str, values: tuple[str, ...]) -> Requirement:
    if not _LABEL_KEY.match(key) or len(key.rsplit("/", 1)[-1]) > 63:
        raise SelectorError(f"invalid label key {key!r}", key=key)
    if operator in ("in", "notin") and not values:
        raise SelectorError(f"for 'in', 'notin' operators, values set can't be empty (key {key!r})", key=key)
    if operator in ("exists", "!") and values:
        raise SelectorError(f"values set must be empty for exists and does not exist (key {key!r})", key=key)
    for value in values:
        if len(value) > 63 or not _LABEL_VALUE.match(value):
            raise SelectorError(f"invalid label value {value!r} for key {key!r}", key=key, value=value)
    return Requirement(key, operator, values)


@dataclass(frozen=True)
class SelectorSpec:
    """weave's selectorSpec: what one selector in a policy needs, and its ipset.

    Three shapes, by which selectors are set:
    - pod only, `ns_name` set: hash:ip of matching pods in that namespace;
    - namespace only, `ns_name` "": list:set of matching namespaces' all-pods sets;
    - both, `ns_name` "": hash:ip of matching pods in matching namespaces.
    The key concatenates the namespace selector's string and the pod selector's, with
    no separator (as weave does); the ipset is named after ns_name + ":" + key.
    """

    pod_selector: Selector | None
    namespace_selector: Selector | None
    ns_name: str
    ipset_type: IPSetType

    @property
    def key(self) -> str:
        ns_part = str(self.namespace_selector) if self.namespace_selector is not None else ""
        pod_part = str(self.pod_selector) if self.pod_selector is not None else ""
        return ns_part + pod_part

    @property
    def ipset_name(self) -> str:
        return ipset_name(f"{self.ns_name}:{self.key}")

    def rule_spec(self, src: bool) -> tuple[tuple[str, ...], str]:
        """Match args and comment text for an iptables rule (weave's getRuleSpec)."""
        args = ("-m", "set", "--match-set", self.ipset_name, "src" if src else "dst")
        if self.ns_name:
            return args, f"pods: namespace: {self.ns_name}, selector: {self.key}"
        return args, f"namespaces: selector: {self.key}"

    def matches_pod(self, pod_labels: Mapping[str, str], ns_labels: Mapping[str, str]) -> bool:
        """For hash:ip specs: does a pod (with its namespace's labels) belong?"""
        if self.namespace_selector is not None and not self.namespace_selector.matches(ns_labels):
            return False
        return self.pod_selector is None or self.pod_selector.matches(pod_labels)


def new_selector_spec(
    pod: LabelSelector | None, namespace: LabelSelector | None, ns_name: str, ipset_type: IPSetType
) -> SelectorSpec:
    return SelectorSpec(
        pod_selector=Selector.parse(pod) if pod is not None else None,
        namespace_selector=Selector.parse(namespace) if namespace is not None else None,
        ns_name=ns_name,
        ipset_type=ipset_type,
    )


def all_pods_spec(ns_name: str) -> SelectorSpec:
    """A namespace's all-pods set: the empty pod selector, shared with `podSelector: {}`."""
    return SelectorSpec(Selector(), None, ns_name, IPSetType.HASH_IP)
