"""The Kubernetes objects the compiler sees, kept in step with a NetworkPolicyController.

Sources (the gossiped store, the Kubernetes API) hand `World` objects under a key of
their own; `put(key, objects)` replaces what that key held and tells the controller
only about the difference, so a pod's label change touches one pod.

Namespaces: weave-npc adds a namespace's default-allow rules only once it knows the
Namespace object, and without them every pod of that namespace would be unreachable.
Here a namespace exists as soon as a pod or a policy names it, with the labels of an
explicit Namespace object if one was given, plus `kubernetes.io/metadata.name` (as the
API server sets on every namespace), so `namespaceSelector` can pick it by name.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from shared.errors import RemoteProtocolError

from .analyser import PolicyRejected
from .model import KubeObject, Namespace, NetworkPolicy, ObjectMeta, Pod, PodStatus, parse_object
from .policy import NetworkPolicyController
from .sources import NAMESPACE, POLICY, StoreEntry, split_key

NAME_LABEL = "kubernetes.io/metadata.name"


def objects_of(entry: StoreEntry) -> list[KubeObject]:
    """The objects a store entry stands for (none for a tombstone).

    Raises RemoteProtocolError when the value does not describe its kind: the caller
    logs it and treats the key as empty, so one bad entry never blocks the rest.
    """
    if entry.value is None:
        return []
    kind, middle, name = split_key(entry.key)
    value = entry.value
    if kind == POLICY:
        policy = parse_object({**value, "kind": POLICY})
        meta = policy.metadata.model_copy(update={"name": name, "namespace": middle, "uid": entry.key})
        return [policy.model_copy(update={"metadata": meta})]
    if kind == NAMESPACE:
        namespace = parse_object({**value, "kind": NAMESPACE})
        return [Namespace(metadata=ObjectMeta(name=name, labels=namespace.labels))]
    return _pods(entry.key, name, value)


def _labels(raw: Any) -> dict[str, str]:
    if not isinstance(raw, Mapping) or not all(isinstance(k, str) and isinstance(v, str) for k, v in raw.items()):
        raise RemoteProtocolError("labels must map strings to strings", code="bad_object")
    return dict(raw)


def _pods(key: str, name: str, value: Mapping[str, Any]) -> list[Pod]:
    """One Pod per address: weave containers may have several, a Pod has one IP."""
    namespace = value.get("namespace") or "default"
    cidrs = value.get("cidrs", [])
    if not isinstance(namespace, str) or not isinstance(cidrs, list) or not all(isinstance(c, str) for c in cidrs):
        raise RemoteProtocolError(f"malformed pod entry {key}", code="bad_object")
    labels = _labels(value.get("labels", {}))
    return [Pod(metadata=ObjectMeta(name=name, namespace=namespace, labels=labels, uid=f"{key}#{i}"),
                status=PodStatus(podIP=cidr.split("/")[0], phase="Running"))
            for i, cidr in enumerate(cidrs)]


class World:
    def __init__(self, controller: NetworkPolicyController) -> None:
        self.controller = controller
        self._by_key: dict[str, list[KubeObject]] = {}
        self._explicit: dict[str, dict[str, str]] = {}   # namespace -> labels, from Namespace objects
        self._mentions: Counter[str] = Counter()          # namespace -> pods and policies naming it
        self._namespaces: dict[str, Namespace] = {}       # what the controller holds
        self.pods_by_ip: dict[str, Pod] = {}

    # -- updates ----------------------------------------------------------------------
    def put(self, key: str, objects: Sequence[KubeObject]) -> list[PolicyRejected]:
        """Replace what `key` held; returns rejections of the policies it brought."""
        old = self._by_key.pop(key, [])
        new_uids = {_uid(o) for o in objects}
        for obj in old:
            self._forget(obj, keep=_uid(obj) in new_uids)
        rejected = []
        for obj in objects:
            rejection = self._add(obj)
            if rejection is not None:
                rejected.append(rejection)
        if objects:
            self._by_key[key] = list(objects)
        self._sync_namespaces()
        return rejected

    def remove(self, key: str) -> None:
        self.put(key, [])

    def _add(self, obj: KubeObject) -> PolicyRejected | None:
        if isinstance(obj, Namespace):
            self._explicit[obj.name] = dict(obj.labels)
            return None
        self._mentions[obj.namespace] += 1
        if isinstance(obj, Pod):
            self.controller.add_pod(obj)
            if obj.has_ip:
                self.pods_by_ip[obj.ip] = obj
            return None
        return self.controller.add_network_policy(obj)

    def _forget(self, obj: KubeObject, keep: bool) -> None:
        """Undo `_add`; `keep`: the same uid comes back at once (an update, not a delete)."""
        if isinstance(obj, Namespace):
            self._explicit.pop(obj.name, None)
            return
        self._mentions[obj.namespace] -= 1
        if isinstance(obj, Pod):
            if self.pods_by_ip.get(obj.ip) is obj:
                del self.pods_by_ip[obj.ip]
            if not keep:
                self.controller.delete_pod(obj)
        elif not keep:
            self.controller.delete_network_policy(obj)

    def _sync_namespaces(self) -> None:
        names = {n for n, count in self._mentions.items() if count > 0} | set(self._explicit)
        for name in list(self._namespaces):
            if name not in names:
                self.controller.delete_namespace(self._namespaces.pop(name))
        for name in names:
            labels = {**self._explicit.get(name, {}), NAME_LABEL: name}
            held = self._namespaces.get(name)
            if held is None or held.labels != labels:
                ns = Namespace(metadata=ObjectMeta(name=name, labels=labels))
                self._namespaces[name] = ns
                self.controller.add_namespace(ns)
        self._mentions = +self._mentions

    # -- views ------------------------------------------------------------------------
    def items(self) -> list[tuple[str, list[KubeObject]]]:
        return [(k, list(v)) for k, v in self._by_key.items()]

    def get(self, key: str) -> list[KubeObject]:
        return list(self._by_key.get(key, ()))

    def policies(self) -> list[NetworkPolicy]:
        return [o for objs in self._by_key.values() for o in objs if isinstance(o, NetworkPolicy)]

    def pods(self) -> list[tuple[str, Pod]]:
        """(source key, pod) for every pod address."""
        return [(k, o) for k, objs in self._by_key.items() for o in objs if isinstance(o, Pod)]

    @property
    def namespaces(self) -> Mapping[str, Namespace]:
        return self._namespaces

    def describe(self, ip: str) -> str:
        """`namespace N, pod P` for a pod's address; `not a pod` otherwise (log lines)."""
        pod = self.pods_by_ip.get(ip)
        return f"namespace {pod.namespace}, pod {pod.metadata.name}" if pod else "not a known pod"


def _uid(obj: KubeObject) -> str:
    return obj.name if isinstance(obj, Namespace) else obj.uid
