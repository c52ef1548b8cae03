"""`weave policy apply`: which documents of a manifest may enter the policy store.

All or nothing: every document is checked first, and one that cannot be enforced
refuses the whole manifest with an AdmissionRefused naming each bad document and why,
so a half-applied file never leaves some policies in and others out. What is checked:
- YAML/JSON syntax, and the shape of each object (model.py);
- kind: NetworkPolicy or Namespace (pods are the containers attached on each host);
- metadata.name present, the value storable as JSON;
- each NetworkPolicy against the compiler itself, next to every policy it would join
  (analyser.py: named ports, CIDRs, protocols, ports, selectors; and the ipset type
  clash policy.py refuses), exactly as every host will judge it.
"""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from shared.errors import RemoteProtocolError, WeaveError
from shared.schemas.npc import ObjectRef

from .model import LabelSelector, Namespace, NetworkPolicy, parse_object
from .policy import NetworkPolicyController
from .selector import Selector
from .sources import namespace_key, policy_key


class AdmissionRefused(WeaveError):
    """The manifest was refused; `problems` lists (document, reason)."""

    code = "bad_request"

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        text = "; ".join(f"{what}: {why}" for what, why in problems)
        super().__init__(f"manifest refused, nothing applied: {text}", problems=problems)
        self.problems = problems


@dataclass(frozen=True)
class Admitted:
    key: str
    value: dict[str, Any]
    ref: ObjectRef


def admit(manifest: str, current: Iterable[NetworkPolicy] = ()) -> list[Admitted]:
    """The store writes for `manifest`; raises AdmissionRefused. `current`: the policies
    already enforced (uid = store key), to judge the new ones among."""
    import yaml  # here: only `weave policy apply` needs it (16 ms of every launch's start-up otherwise)

    try:
        documents = [d for d in _flatten(yaml.safe_load_all(manifest)) if d is not None]
    except yaml.YAMLError as exc:
        raise AdmissionRefused([("manifest", f"unparseable YAML: {exc}")]) from exc
    if not documents:
        raise AdmissionRefused([("manifest", "no documents")])
    admitted: dict[str, Admitted] = {}
    problems: list[tuple[str, str]] = []
    for number, doc in enumerate(documents, 1):
        try:
            item = _document(doc)
        except RemoteProtocolError as exc:
            problems.append((f"document {number}", exc.message))
            continue
        admitted[item.key] = item  # a later document with the same name wins
    problems += _compile_check(admitted.values(), current)
    if problems:
        raise AdmissionRefused(problems)
    return list(admitted.values())


def _flatten(documents: Iterable[Any]) -> Iterable[Any]:
    for doc in documents:
        if isinstance(doc, Mapping) and doc.get("kind") == "List":
            yield from _flatten(doc.get("items") or [])
        else:
            yield doc


def _document(doc: Any) -> Admitted:
    if not isinstance(doc, Mapping):
        raise RemoteProtocolError("not an object", code="bad_object")
    kind = doc.get("kind")
    if kind == "Pod":
        raise RemoteProtocolError("pods are not applied: they are the containers attached on each host",
                                  code="bad_object")
    if kind not in ("NetworkPolicy", "Namespace"):
        raise RemoteProtocolError(f"kind {kind!r} is not NetworkPolicy or Namespace", code="bad_object")
    obj = parse_object(doc)
    if not obj.metadata.name:
        raise RemoteProtocolError(f"{kind} without metadata.name", code="bad_object")
    try:
        value = json.loads(json.dumps(doc))
    except (TypeError, ValueError) as exc:
        raise RemoteProtocolError(f"{kind} {obj.metadata.name}: not storable as JSON ({exc})",
                                  code="bad_object") from exc
    if isinstance(obj, Namespace):
        _check_labels(obj)
        return Admitted(namespace_key(obj.name), value, ObjectRef(kind="Namespace", name=obj.name))
    return Admitted(policy_key(obj.namespace, obj.name), value,
                    ObjectRef(kind="NetworkPolicy", namespace=obj.namespace, name=obj.name))


def _check_labels(ns: Namespace) -> None:
    """Label keys and values as Kubernetes allows them (the selector parser's rules)."""
    Selector.parse(LabelSelector(matchLabels=ns.labels))


def _compile_check(items: Iterable[Admitted], current: Iterable[NetworkPolicy]) -> list[tuple[str, str]]:
    new = {i.key: i for i in items if i.ref.kind == "NetworkPolicy"}
    scratch = NetworkPolicyController()
    for policy in current:
        if policy.uid not in new:
            scratch.add_network_policy(policy)
    problems = []
    for key, item in new.items():
        policy = parse_object(item.value)
        policy = policy.model_copy(update={"metadata": policy.metadata.model_copy(update={"uid": key})})
        rejection = scratch.add_network_policy(policy)
        if rejection is not None:
            problems.append((f"NetworkPolicy {item.ref.namespace}/{item.ref.name}", rejection.message))
    return problems
