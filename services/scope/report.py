"""Scope's report model: Report, Topology, Node, Metric; merge; un-merge; JSON form.

Sans-I/O and clock-free: times are parameters (`int` nanoseconds since the Unix epoch,
UTC), and so is the report ID.

Sharing contract (why merge is cheap):
- `Node` and `Metric` are values: never mutate one, or its dicts and tuples, after it
  was built. Builders (`with_*`) return new nodes; merges share unchanged nodes, dicts
  and tuples between inputs and results.
- `Topology` and `Report` are containers you own once built: `Topology.add_node` mutates
  (Scope's AddNode does too, to spare garbage). `merge`/`unmerge` return fresh
  containers (new topologies and node dicts) that share nodes with their inputs.
- Templates and controls are Scope's JSON dicts, shared, read-only.

Merge is a join (commutative, associative, idempotent) everywhere:
- latest: the newer timestamp wins; equal timestamps: the greater value.
- sets, parents, adjacency: sorted unions. metrics: samples unioned by time (equal
  times: the greater value), min of mins, max of maxes. children: by id, merged.
- node id/topology, topology shape/tag/(label, plural), conflicting templates: the
  greater (an empty string loses to anything).
- TS: the earliest set time (Scope). DNS: union. Plugins: union by id.
- Window and Sampling: the maximum. Scope adds them, which is not idempotent (a report
  merged twice counts twice); a merged report's window is its consumer's to set.
- ID: kept when equal, else "" (Scope gives every merge a fresh random ID; "same ID means
  same report" must hold, so a merge of different reports has none until its owner sets
  one).

`unmerge(prev)` is Scope's UnsafeUnMerge (see `Node.unmerge`), so that for any x and
prev: `prev.merge(x.unmerge(prev)) == prev.merge(x)` and `x.merge(x.unmerge(prev)) == x`.
"""
from __future__ import annotations

import json
import re
from datetime import date, datetime, timedelta
from typing import Any, Callable, Iterable, Iterator, Mapping

from shared.errors import LocalProtocolError, RemoteProtocolError

Latest = dict[str, tuple[int, str]]
StringSets = dict[str, tuple[str, ...]]
Plain = dict[str, Any]

NS = 1_000_000_000
# Go's zero time.Time (0001-01-01T00:00:00Z) in our units: Scope's "no time".
GO_ZERO_TIME_NS = -62_135_596_800 * NS
_MAX_TIME_NS = (253_402_300_800 * NS) - 1  # 9999-12-31T23:59:59.999999999Z

# (wire key, Scope topology name, shape, tag, label, label_plural), in wire order.
TOPOLOGY_SPECS: tuple[tuple[str, str, str, str, str, str], ...] = (
    ("Endpoint", "endpoint", "", "", "", ""),
    ("Process", "process", "square", "", "process", "processes"),
    ("Container", "container", "hexagon", "", "container", "containers"),
    ("Pod", "pod", "heptagon", "", "pod", "pods"),
    ("Service", "service", "heptagon", "", "service", "services"),
    ("Deployment", "deployment", "heptagon", "", "deployment", "deployments"),
    ("ReplicaSet", "replica_set", "triangle", "", "replica set", "replica sets"),
    ("DaemonSet", "daemon_set", "pentagon", "", "daemonset", "daemonsets"),
    ("StatefulSet", "stateful_set", "octagon", "", "stateful set", "stateful sets"),
    ("CronJob", "cron_job", "triangle", "", "cron job", "cron jobs"),
    ("Namespace", "namespace", "", "", "", ""),
    ("ContainerImage", "container_image", "hexagon", "", "image", "images"),
    ("Host", "host", "circle", "", "host", "hosts"),
    ("ECSTask", "ecs_task", "heptagon", "", "task", "tasks"),
    ("ECSService", "ecs_service", "heptagon", "", "service", "services"),
    ("SwarmService", "swarm_service", "heptagon", "", "service", "services"),
    ("Overlay", "overlay", "circle", "", "peer", "peers"),
    ("PersistentVolume", "persistent_volume", "cylinder", "", "persistent volume",
     "persistent volumes"),
    ("PersistentVolumeClaim", "persistent_volume_claim", "dottedcylinder", "",
     "persistent volume claim", "persistent volume claims"),
    ("StorageClass", "storage_class", "sheet", "", "storage class", "storage classes"),
    ("VolumeSnapshot", "volume_snapshot", "dottedcylinder", "camera", "volume snapshot",
     "volume snapshots"),
    ("VolumeSnapshotData", "volume_snapshot_data", "cylinder", "camera",
     "volume snapshot data", "volume snapshot data"),
    ("Job", "job", "dottedtriangle", "", "job", "jobs"),
)
TOPOLOGY_NAMES: tuple[str, ...] = tuple(spec[1] for spec in TOPOLOGY_SPECS)
_NAME_BY_KEY = {spec[0]: spec[1] for spec in TOPOLOGY_SPECS}


# ---------------------------------------------------------------- joins of parts

def _union(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    """Sorted unique union of two sorted unique tuples; returns an input when it is it."""
    if a is b or not b or a == b:
        return a
    if not a:
        return b
    out = tuple(sorted(set(a).union(b)))
    return a if len(out) == len(a) else b if len(out) == len(b) else out


def _sorted_unique(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(sorted(set(values)))


def _join_dicts(a: dict, b: dict, join: Callable[[Any, Any], Any]) -> dict:
    """Key-wise join of two read-only dicts; shares `a` or `b` when nothing changes."""
    if a is b or not b:
        return a
    if not a:
        return b
    if len(a) < len(b):
        a, b = b, a
    out = None
    for key, value in b.items():
        current = a.get(key, _MISSING)
        if current is _MISSING:
            joined = value
        elif current is value or current == value:
            continue
        else:
            joined = join(current, value)
            if joined is current:
                continue
        if out is None:
            out = dict(a)
        out[key] = joined
    return a if out is None else out


_MISSING = object()


def _newer(a: tuple[int, str], b: tuple[int, str]) -> tuple[int, str]:
    """Latest entries: the newer time wins; at equal times the greater value."""
    return a if a >= b else b


def _greater_plain(a: Any, b: Any) -> Any:
    """A deterministic choice between two conflicting JSON values (templates, plugins)."""
    ka = json.dumps(a, sort_keys=True, default=str)
    kb = json.dumps(b, sort_keys=True, default=str)
    return a if ka >= kb else b


def merge_latest(a: Latest, b: Latest) -> Latest:
    return _join_dicts(a, b, _newer)


def merge_sets(a: StringSets, b: StringSets) -> StringSets:
    return _join_dicts(a, b, _union)


def _merge_plain_maps(a: Plain, b: Plain) -> Plain:
    return _join_dicts(a, b, _greater_plain)


# ---------------------------------------------------------------- Metric

class Metric:
    """A time series: `samples` sorted by time, unique times, `(ns, value)`; min and max.

    `min`/`max` default to the samples' extremes (0.0 without samples); the probe sets
    `max` to a ceiling (e.g. 100% CPU), as Scope's `WithMax` does.
    """

    __slots__ = ("samples", "min", "max")

    def __init__(self, samples: Iterable[tuple[int, float]] = (),
                 min: float | None = None, max: float | None = None) -> None:
        by_time: dict[int, float] = {}
        for ts, value in samples:
            value = float(value)
            if ts not in by_time or value > by_time[ts]:
                by_time[ts] = value
        self.samples = tuple(sorted(by_time.items()))
        values = by_time.values()
        self.min = float(min) if min is not None else (_min(values) if values else 0.0)
        self.max = float(max) if max is not None else (_max(values) if values else 0.0)

    @classmethod
    def _make(cls, samples: tuple[tuple[int, float], ...], lo: float, hi: float) -> Metric:
        m = object.__new__(cls)
        m.samples, m.min, m.max = samples, lo, hi
        return m

    @classmethod
    def single(cls, ts: int, value: float, *, max: float | None = None) -> Metric:
        """One sample (Scope's MakeSingletonMetric, optionally `.WithMax(max)`)."""
        value = float(value)
        return cls._make(((ts, value),), value, value if max is None else float(max))

    def merge(self, other: Metric) -> Metric:
        if self is other:
            return self
        a, b = self.samples, other.samples
        if a is b or a == b or not b:
            samples = a
        elif not a:
            samples = b
        elif a[-1][0] < b[0][0]:
            samples = a + b
        elif b[-1][0] < a[0][0]:
            samples = b + a
        else:
            by_time = dict(a)
            for ts, value in b:
                if ts not in by_time or value > by_time[ts]:
                    by_time[ts] = value
            samples = tuple(sorted(by_time.items()))
        lo, hi = _min((self.min, other.min)), _max((self.max, other.max))
        if samples is a and lo == self.min and hi == self.max:
            return self
        return Metric._make(samples, lo, hi)

    def last(self) -> tuple[int, float] | None:
        """The newest sample, or None without samples."""
        return self.samples[-1] if self.samples else None

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Metric) and self.samples == other.samples
                and self.min == other.min and self.max == other.max)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Metric({self.samples!r}, min={self.min!r}, max={self.max!r})"


_min, _max = min, max


def _merge_metric(a: Metric, b: Metric) -> Metric:
    return a.merge(b)


def merge_metrics(a: dict[str, Metric], b: dict[str, Metric]) -> dict[str, Metric]:
    return _join_dicts(a, b, _merge_metric)


# ---------------------------------------------------------------- Node

class Node:
    """One node of a topology; a value (see the module's sharing contract).

    `latest`: key -> (ns, value). `sets`, `parents`: key -> sorted unique tuple (Scope's
    parents are keyed by topology name). `adjacency`: sorted unique ids of the nodes
    this one has edges to. `children`: nodes sorted by id (Scope's probes send none).
    `id` and `topology` are "" in a delta when unchanged: the key under which a node
    sits in `Topology.nodes` is its identity.
    """

    __slots__ = ("id", "topology", "latest", "sets", "adjacency", "parents", "metrics",
                 "children")

    def __init__(self, id: str, topology: str = "", *,
                 latest: Mapping[str, tuple[int, str]] | None = None,
                 sets: Mapping[str, Iterable[str]] | None = None,
                 adjacency: Iterable[str] = (),
                 parents: Mapping[str, Iterable[str]] | None = None,
                 metrics: Mapping[str, Metric] | None = None,
                 children: Iterable[Node] = ()) -> None:
        self.id = id
        self.topology = topology
        self.latest = dict(latest) if latest else {}
        self.sets = {k: _sorted_unique(v) for k, v in sets.items()} if sets else {}
        self.adjacency = _sorted_unique(adjacency)
        self.parents = {k: _sorted_unique(v) for k, v in parents.items()} if parents else {}
        self.metrics = dict(metrics) if metrics else {}
        self.children = _children_of(children)

    @classmethod
    def _make(cls, id: str, topology: str, latest: Latest, sets: StringSets,
              adjacency: tuple[str, ...], parents: StringSets, metrics: dict[str, Metric],
              children: tuple[Node, ...]) -> Node:
        """Build from parts already normalized (decoder, merge): no copies, no sorting."""
        n = object.__new__(cls)
        n.id, n.topology, n.latest, n.sets = id, topology, latest, sets
        n.adjacency, n.parents, n.metrics, n.children = adjacency, parents, metrics, children
        return n

    def _replace(self, **parts: Any) -> Node:
        n = object.__new__(Node)
        for slot in Node.__slots__:
            setattr(n, slot, parts[slot] if slot in parts else getattr(self, slot))
        return n

    # -- builders (each returns a new node)
    def with_latest(self, key: str, ts: int, value: str) -> Node:
        return self.with_latests(ts, {key: value})

    def with_latests(self, ts: int, values: Mapping[str, str]) -> Node:
        """Set every key of `values` at time `ts` (a newer existing entry is replaced:
        the probe's own clock is authoritative for its own node)."""
        latest = dict(self.latest)
        for key, value in values.items():
            latest[key] = (ts, value)
        return self._replace(latest=latest)

    def with_set(self, key: str, values: Iterable[str]) -> Node:
        return self.with_sets({key: values})

    def with_sets(self, sets: Mapping[str, Iterable[str]]) -> Node:
        add = {k: _sorted_unique(v) for k, v in sets.items()}
        return self._replace(sets=merge_sets(self.sets, add))

    def with_adjacent(self, *ids: str) -> Node:
        return self._replace(adjacency=_union(self.adjacency, _sorted_unique(ids)))

    def with_parent(self, topology: str, parent_id: str) -> Node:
        return self.with_parents({topology: (parent_id,)})

    def with_parents(self, parents: Mapping[str, Iterable[str]]) -> Node:
        add = {k: _sorted_unique(v) for k, v in parents.items()}
        return self._replace(parents=merge_sets(self.parents, add))

    def with_metric(self, key: str, metric: Metric) -> Node:
        return self._replace(metrics=merge_metrics(self.metrics, {key: metric}))

    def with_metrics(self, metrics: Mapping[str, Metric]) -> Node:
        return self._replace(metrics=merge_metrics(self.metrics, dict(metrics)))

    def with_child(self, child: Node) -> Node:
        return self._replace(children=_merge_children(self.children, (child,)))

    def lookup(self, key: str) -> str | None:
        """The latest value of `key`, or None."""
        entry = self.latest.get(key)
        return None if entry is None else entry[1]

    # -- lattice
    def merge(self, other: Node) -> Node:
        if self is other:
            return self
        a, b = self, other  # the empty-section checks inline: this is the app's hot loop
        return Node._make(
            a.id if a.id >= b.id else b.id,
            a.topology if a.topology >= b.topology else b.topology,
            (a.latest if not b.latest else b.latest if not a.latest
             else _join_dicts(a.latest, b.latest, _newer)),
            (a.sets if not b.sets else b.sets if not a.sets
             else _join_dicts(a.sets, b.sets, _union)),
            _union(a.adjacency, b.adjacency),
            (a.parents if not b.parents else b.parents if not a.parents
             else _join_dicts(a.parents, b.parents, _union)),
            (a.metrics if not b.metrics else b.metrics if not a.metrics
             else _join_dicts(a.metrics, b.metrics, _merge_metric)),
            (a.children if not b.children else b.children if not a.children
             else _merge_children(a.children, b.children)))

    def unmerge(self, prev: Node) -> Node | None:
        """What of this node a receiver holding `prev` lacks (Scope's UnsafeUnMerge).

        Different id or topology: the whole node. Otherwise id and topology are cleared,
        and each of latest, sets, parents, adjacency is dropped whole when equal to
        prev's (kept whole when anything in it changed). Metrics (samples of this period)
        and children are always kept. None when nothing is left to send.
        """
        if self.id != prev.id or self.topology != prev.topology:
            return self
        latest = {} if self.latest == prev.latest else self.latest
        sets = {} if self.sets == prev.sets else self.sets
        parents = {} if self.parents == prev.parents else self.parents
        adjacency = () if self.adjacency == prev.adjacency else self.adjacency
        children = self.children
        if (not latest and not sets and not parents and not adjacency and not self.metrics
                and (not children or children == prev.children)):
            return None
        return Node._make("", "", latest, sets, adjacency, parents, self.metrics, children)

    def __eq__(self, other: object) -> bool:
        if self is other:
            return True
        return isinstance(other, Node) and all(
            getattr(self, s) == getattr(other, s) for s in Node.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        parts = [f"{s}={getattr(self, s)!r}" for s in Node.__slots__[2:] if getattr(self, s)]
        return f"Node({self.id!r}, {self.topology!r}{', ' if parts else ''}{', '.join(parts)})"


def _children_of(children: Iterable[Node]) -> tuple[Node, ...]:
    by_id: dict[str, Node] = {}
    for child in children:
        have = by_id.get(child.id)
        by_id[child.id] = child if have is None else have.merge(child)
    return tuple(by_id[k] for k in sorted(by_id))


def _merge_children(a: tuple[Node, ...], b: tuple[Node, ...]) -> tuple[Node, ...]:
    if a is b or not b or a == b:
        return a
    if not a:
        return b
    return _children_of(a + b)


# ---------------------------------------------------------------- Topology

class Topology:
    """Nodes of one kind, keyed by node id, with how Scope's UI shows them.

    `controls` and the three template maps are Scope's JSON dicts (id -> template);
    `nodes` maps node id -> Node.
    """

    __slots__ = ("shape", "tag", "label", "label_plural", "nodes", "controls",
                 "metadata_templates", "metric_templates", "table_templates")

    def __init__(self, shape: str = "", tag: str = "", label: str = "",
                 label_plural: str = "", nodes: Mapping[str, Node] | None = None,
                 controls: Plain | None = None, metadata_templates: Plain | None = None,
                 metric_templates: Plain | None = None,
                 table_templates: Plain | None = None) -> None:
        self.shape, self.tag, self.label, self.label_plural = shape, tag, label, label_plural
        self.nodes: dict[str, Node] = dict(nodes) if nodes else {}
        self.controls: Plain = controls or {}
        self.metadata_templates: Plain = metadata_templates or {}
        self.metric_templates: Plain = metric_templates or {}
        self.table_templates: Plain = table_templates or {}

    def add_node(self, node: Node) -> Topology:
        """Merge `node` in under `node.id` (mutates; returns self for chaining)."""
        have = self.nodes.get(node.id)
        self.nodes[node.id] = node if have is None else have.merge(node)
        return self

    def replace_node(self, node: Node) -> Topology:
        """Put `node` under `node.id`, dropping what was there (mutates)."""
        self.nodes[node.id] = node
        return self

    def copy(self) -> Topology:
        """A container of our own: a new node dict; nodes and templates shared."""
        t = object.__new__(Topology)
        for slot in Topology.__slots__:
            setattr(t, slot, getattr(self, slot))
        t.nodes = dict(self.nodes)
        return t

    def merge_in(self, other: Topology) -> None:
        """Join `other` into this topology, which must be ours (see `copy`)."""
        if other.shape > self.shape:
            self.shape = other.shape
        if other.tag > self.tag:
            self.tag = other.tag
        if (other.label != self.label or other.label_plural != self.label_plural) and (
                (other.label, other.label_plural) > (self.label, self.label_plural)):
            self.label, self.label_plural = other.label, other.label_plural
        nodes = self.nodes
        for key, node in other.nodes.items():
            have = nodes.get(key)
            nodes[key] = node if have is None else have.merge(node)
        if other.controls:
            self.controls = _merge_plain_maps(self.controls, other.controls)
        if other.metadata_templates:
            self.metadata_templates = _merge_plain_maps(self.metadata_templates,
                                                        other.metadata_templates)
        if other.metric_templates:
            self.metric_templates = _merge_plain_maps(self.metric_templates,
                                                      other.metric_templates)
        if other.table_templates:
            self.table_templates = _merge_plain_maps(self.table_templates,
                                                     other.table_templates)

    def merge(self, other: Topology) -> Topology:
        out = self.copy()
        out.merge_in(other)
        return out

    def unmerge(self, prev: Topology) -> Topology:
        """Scope's Topology.UnsafeUnMerge, on a copy: shape, tag, the label pair and each
        template map are cleared when equal to prev's; controls are always kept (as
        Scope's probe sends them in deltas); nodes are un-merged one by one."""
        out = Topology(
            "" if self.shape == prev.shape else self.shape,
            "" if self.tag == prev.tag else self.tag,
            controls=self.controls)
        if (self.label, self.label_plural) != (prev.label, prev.label_plural):
            out.label, out.label_plural = self.label, self.label_plural
        for name in ("metadata_templates", "metric_templates", "table_templates"):
            mine = getattr(self, name)
            if mine != getattr(prev, name):
                setattr(out, name, mine)
        prev_nodes, out_nodes = prev.nodes, out.nodes
        for key, node in self.nodes.items():
            old = prev_nodes.get(key)
            delta = node if old is None else node.unmerge(old)
            if delta is not None:
                out_nodes[key] = delta
        return out

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Topology) and all(
            getattr(self, s) == getattr(other, s) for s in Topology.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (f"Topology(shape={self.shape!r}, label={self.label!r}, "
                f"nodes={len(self.nodes)})")


# ---------------------------------------------------------------- Report

Dns = dict[str, tuple[tuple[str, ...], tuple[str, ...]]]  # address -> (forward, reverse)


def _join_dns_record(a: tuple, b: tuple) -> tuple:
    return (_union(a[0], b[0]), _union(a[1], b[1]))


def merge_dns(a: Dns, b: Dns) -> Dns:
    return _join_dicts(a, b, _join_dns_record)


def merge_plugins(a: tuple[Plain, ...], b: tuple[Plain, ...]) -> tuple[Plain, ...]:
    """Plugin specs joined by their `id` (conflicts: a deterministic pick), sorted by id."""
    if a is b or not b or a == b:
        return a
    if not a:
        return b
    by_id = _merge_plain_maps({str(p.get("id", "")): p for p in a},
                              {str(p.get("id", "")): p for p in b})
    return tuple(by_id[k] for k in sorted(by_id))


def _earliest(a: int, b: int) -> int:
    """The earlier of two times, Go's zero time meaning "unset" (Scope's merged TS)."""
    if a == GO_ZERO_TIME_NS:
        return b
    if b == GO_ZERO_TIME_NS:
        return a
    return a if a <= b else b


class Report:
    """A Scope report: one `Topology` per kind (attributes named as `TOPOLOGY_NAMES`:
    `endpoint`, `process`, `host`, `overlay`, ...) and the report's own fields.

    ts: when it was made (ns; GO_ZERO_TIME_NS = unset). dns: address -> (forward names,
    reverse names), each sorted. sampling: (count, total). window: ns the report covers.
    shortcut: push to the UI at once. plugins: plugin specs (Scope's JSON dicts).
    id: Scope's random decimal ID. Scalars may be assigned by the report's owner.
    """

    __slots__ = ("ts",) + TOPOLOGY_NAMES + ("dns", "sampling", "window", "shortcut",
                                            "plugins", "id")

    def __init__(self, *, ts: int = GO_ZERO_TIME_NS, dns: Dns | None = None,
                 sampling: tuple[int, int] = (0, 0), window: int = 0,
                 shortcut: bool = False, plugins: Iterable[Plain] = (), id: str = "",
                 **topologies: Topology) -> None:
        unknown = set(topologies) - set(TOPOLOGY_NAMES)
        if unknown:
            raise LocalProtocolError(f"no such Scope topologies: {sorted(unknown)}")
        self.ts = ts
        for name in TOPOLOGY_NAMES:
            setattr(self, name, topologies.get(name) or Topology())
        self.dns: Dns = dns or {}
        self.sampling, self.window, self.shortcut = sampling, window, shortcut
        self.plugins: tuple[Plain, ...] = tuple(plugins)
        self.id = id

    @classmethod
    def make(cls, ts: int, report_id: str, window: int = 0) -> Report:
        """An empty report with Scope's shapes and labels (Scope's MakeReport).

        `report_id`: Scope uses a random int63 in decimal, e.g.
        `str(random.getrandbits(63))`; the caller draws it (no hidden randomness here).
        """
        r = cls(ts=ts, window=window, id=report_id)
        for _key, name, shape, tag, label, plural in TOPOLOGY_SPECS:
            setattr(r, name, Topology(shape, tag, label, plural))
        return r

    def topology(self, name: str) -> Topology:
        """A topology by Scope name (`"process"`) or wire key (`"Process"`)."""
        name = _NAME_BY_KEY.get(name, name)
        if name not in TOPOLOGY_NAMES:
            raise LocalProtocolError(f"no such Scope topology: {name!r}")
        return getattr(self, name)

    def topologies(self) -> Iterator[tuple[str, Topology]]:
        """(Scope name, topology), in wire order."""
        for name in TOPOLOGY_NAMES:
            yield name, getattr(self, name)

    def copy(self) -> Report:
        """A report of our own: fresh topologies and node dicts; nodes shared."""
        r = object.__new__(Report)
        for slot in Report.__slots__:
            setattr(r, slot, getattr(self, slot))
        for name in TOPOLOGY_NAMES:
            setattr(r, name, getattr(self, name).copy())
        return r

    def merge_in(self, other: Report) -> None:
        """Join `other` into this report, which must be ours (see `copy`)."""
        self.ts = _earliest(self.ts, other.ts)
        for name in TOPOLOGY_NAMES:
            getattr(self, name).merge_in(getattr(other, name))
        self.dns = merge_dns(self.dns, other.dns)
        self.sampling = (_max(self.sampling[0], other.sampling[0]),
                         _max(self.sampling[1], other.sampling[1]))
        self.window = _max(self.window, other.window)
        self.shortcut = self.shortcut or other.shortcut
        self.plugins = merge_plugins(self.plugins, other.plugins)
        if self.id != other.id:
            self.id = ""

    def merge(self, other: Report) -> Report:
        """The join of two reports (module docstring); inputs are not modified."""
        out = self.copy()
        out.merge_in(other)
        return out

    def unmerge(self, prev: Report) -> Report:
        """The delta a receiver holding `prev` needs to have this report (Scope's
        UnsafeUnMerge, on a copy): topologies un-merged; ts, dns, sampling, window,
        shortcut, plugins and id are this report's (Scope leaves them whole too)."""
        out = object.__new__(Report)
        for slot in Report.__slots__:
            setattr(out, slot, getattr(self, slot))
        for name in TOPOLOGY_NAMES:
            setattr(out, name, getattr(self, name).unmerge(getattr(prev, name)))
        return out

    def node_count(self) -> int:
        return sum(len(t.nodes) for _, t in self.topologies())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Report) and all(
            getattr(self, s) == getattr(other, s) for s in Report.__slots__)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        counts = ", ".join(f"{n}={len(t.nodes)}" for n, t in self.topologies() if t.nodes)
        return f"Report(id={self.id!r}, ts={self.ts}, {counts})"


def merge_reports(reports: Iterable[Report]) -> Report:
    """The join of many reports in one pass (the app's window): O(total nodes), where
    folding `a.merge(b)` would copy the growing node dicts at every step."""
    it = iter(reports)
    first = next(it, None)
    if first is None:
        return Report()
    out = first.copy()
    for report in it:
        out.merge_in(report)
    return out


# ---------------------------------------------------------------- times as RFC3339

_EPOCH = datetime(1970, 1, 1)
_EPOCH_DATE = date(1970, 1, 1)
_RFC3339 = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9})\d*)?"
    r"(?:[Zz]|([+-])(\d\d):(\d\d))\Z")


def format_rfc3339nano(ns: int) -> str:
    """Go's `Format(time.RFC3339Nano)` of a UTC time: fraction without trailing zeros
    (none at all when zero), 'Z'. Years 1-9999 only (LocalProtocolError otherwise)."""
    if not GO_ZERO_TIME_NS <= ns <= _MAX_TIME_NS:
        raise LocalProtocolError(f"time out of RFC 3339 range: {ns} ns")
    sec, frac = divmod(ns, NS)
    t = _EPOCH + timedelta(seconds=sec)
    text = (f"{t.year:04d}-{t.month:02d}-{t.day:02d}T"
            f"{t.hour:02d}:{t.minute:02d}:{t.second:02d}")
    if frac:
        text += "." + f"{frac:09d}".rstrip("0")
    return text + "Z"


def parse_rfc3339(text: Any) -> int:
    """An RFC 3339 time (any offset, up to 9 fraction digits kept) as UTC ns.
    RemoteProtocolError when it is not one."""
    m = _RFC3339.match(text) if type(text) is str else None
    if m is None:
        raise RemoteProtocolError(f"not an RFC 3339 time: {text!r:.60}", code="bad_time")
    y, mo, d, h, mi, s, frac, sign, oh, om = m.groups()
    try:
        days = (date(int(y), int(mo), int(d)) - _EPOCH_DATE).days
    except ValueError:
        raise RemoteProtocolError(f"not a date: {text!r:.60}", code="bad_time") from None
    if int(h) > 23 or int(mi) > 59 or int(s) > 59:
        raise RemoteProtocolError(f"not a time of day: {text!r:.60}", code="bad_time")
    secs = days * 86400 + int(h) * 3600 + int(mi) * 60 + int(s)
    if sign:
        offset = int(oh) * 3600 + int(om) * 60
        secs += -offset if sign == "+" else offset
    ns = secs * NS + (int(frac.ljust(9, "0")) if frac else 0)
    if not GO_ZERO_TIME_NS <= ns <= _MAX_TIME_NS:
        raise RemoteProtocolError(f"time out of range: {text!r:.60}", code="bad_time")
    return ns


def check_time_range(ns: int) -> int:
    """`ns` if it is within years 1-9999 (what both of Scope's encodings can carry)."""
    if not GO_ZERO_TIME_NS <= ns <= _MAX_TIME_NS:
        raise RemoteProtocolError(f"time out of range: {ns} ns", code="bad_time")
    return ns


def _cached(fn: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Memoize a time codec for one report (a probe stamps many entries alike)."""
    cache: dict[Any, Any] = {}

    def get(key: Any) -> Any:
        try:
            return cache[key]
        except KeyError:
            value = cache[key] = fn(key)
            return value
    return get


# ---------------------------------------------------------------- Scope's JSON form
# One dict shape serves both encodings: Scope's JSON (times as RFC3339Nano strings) and
# msgpack (times as Go's 15-byte MarshalBinary strings; see codec.py). Which keys are
# present follows Scope 1.13's struct tags, as the samples show:
#   node: id, topology (omitted when ""), sets (null when empty), adjacency, latest,
#         metrics (omitted when empty), parents, children (null when empty);
#   topology: shape, tag, label, label_plural, nodes, controls, *_templates (omitted
#         when empty); metric: samples (omitted when empty), min, max;
#   report: all 30 keys, always.

TimeOut = Callable[[int], Any]
TimeIn = Callable[[Any], int]


def report_to_json(report: Report) -> dict[str, Any]:
    """The report as Scope's JSON codec writes it (a dict for `json.dumps`)."""
    return report_to_wire(report, format_rfc3339nano)


def report_from_json(obj: Any) -> Report:
    """A report from Scope's JSON (as `json.loads` gives it); RemoteProtocolError if it
    is not one."""
    return report_from_wire(obj, parse_rfc3339)


def report_to_wire(report: Report, time_out: TimeOut) -> dict[str, Any]:
    """The report as a dict in wire order, times converted by `time_out(ns)`."""
    t = _cached(time_out)
    wire: dict[str, Any] = {"TS": t(report.ts)}
    for key, name, *_ in TOPOLOGY_SPECS:
        wire[key] = _topology_to_wire(getattr(report, name), t)
    wire["DNS"] = {addr: _dns_record_to_wire(rec) for addr, rec in report.dns.items()}
    wire["Sampling"] = {"Count": report.sampling[0], "Total": report.sampling[1]}
    wire["Window"] = report.window
    wire["Shortcut"] = report.shortcut
    wire["Plugins"] = list(report.plugins)
    wire["ID"] = report.id
    return wire


def _topology_to_wire(topology: Topology, t: TimeOut) -> dict[str, Any]:
    wire: dict[str, Any] = {}
    for field in ("shape", "tag", "label", "label_plural"):
        value = getattr(topology, field)
        if value:
            wire[field] = value
    if topology.nodes:
        wire["nodes"] = {k: _node_to_wire(n, t) for k, n in topology.nodes.items()}
    for field in ("controls", "metadata_templates", "metric_templates", "table_templates"):
        value = getattr(topology, field)
        if value:
            wire[field] = value
    return wire


def _node_to_wire(node: Node, t: TimeOut) -> dict[str, Any]:
    wire: dict[str, Any] = {}
    if node.id:
        wire["id"] = node.id
    if node.topology:
        wire["topology"] = node.topology
    wire["sets"] = {k: list(v) for k, v in node.sets.items()} if node.sets else None
    if node.adjacency:
        wire["adjacency"] = list(node.adjacency)
    if node.latest:
        wire["latest"] = {k: {"timestamp": t(e[0]), "value": e[1]}
                          for k, e in sorted(node.latest.items())}
    if node.metrics:
        wire["metrics"] = {k: _metric_to_wire(m, t) for k, m in node.metrics.items()}
    wire["parents"] = {k: list(v) for k, v in node.parents.items()} if node.parents else None
    wire["children"] = [_node_to_wire(c, t) for c in node.children] or None
    return wire


def _metric_to_wire(metric: Metric, t: TimeOut) -> dict[str, Any]:
    wire: dict[str, Any] = {}
    if metric.samples:
        wire["samples"] = [{"date": t(ts), "value": v} for ts, v in metric.samples]
    wire["min"] = metric.min
    wire["max"] = metric.max
    return wire


def _dns_record_to_wire(record: tuple) -> dict[str, list[str]]:
    wire = {}
    if record[0]:
        wire["forward"] = list(record[0])
    if record[1]:
        wire["reverse"] = list(record[1])
    return wire


# -- decoding: every check raises RemoteProtocolError (these dicts come from peers)

def report_from_wire(obj: Any, time_in: TimeIn) -> Report:
    """A report from its wire dict, times converted by `time_in` (which raises
    RemoteProtocolError on a bad time). Unknown keys are ignored, as Scope's codec does;
    missing ones take their empty values."""
    try:
        return _report_from_wire(obj, _cached(time_in))
    except RemoteProtocolError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, OverflowError,
            RecursionError) as e:
        raise RemoteProtocolError(f"malformed Scope report: {type(e).__name__}: {e}",
                                  code="bad_report") from e


def _bad(what: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"malformed Scope report: {what}", code="bad_report")


def _str(value: Any, what: str) -> str:
    if value is None:
        return ""
    if type(value) is not str:
        raise _bad(f"{what} is not a string")
    return value


def _map(value: Any, what: str) -> dict:
    if value is None:
        return {}
    if type(value) is not dict:
        raise _bad(f"{what} is not a map")
    return value


def _number(value: Any, what: str) -> float:
    if type(value) is float:
        return value
    if type(value) is not int:
        raise _bad(f"{what} is not a number")
    return float(value)


def _int(value: Any, what: str) -> int:
    if type(value) is not int:
        raise _bad(f"{what} is not an integer")
    return value


def _strings(value: Any, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if type(value) is not list and type(value) is not tuple:
        raise _bad(f"{what} is not a list")
    for item in value:
        if type(item) is not str:
            raise _bad(f"{what} holds a non-string")
    return tuple(sorted(set(value)))


def _string_sets(value: Any, what: str) -> StringSets:
    return {_str(k, what): _strings(v, what) for k, v in _map(value, what).items()}


def _report_from_wire(w: Any, t: TimeIn) -> Report:
    if type(w) is not dict:
        raise _bad("a report is not a map")
    r = object.__new__(Report)
    r.ts = GO_ZERO_TIME_NS if w.get("TS") is None else t(w["TS"])
    for key, name, *_ in TOPOLOGY_SPECS:
        setattr(r, name, _topology_from_wire(w.get(key), t))
    # "nodes": where Scope 1.11.6 put DNS by accident (Scope still reads it).
    r.dns = merge_dns(_dns_from_wire(w.get("DNS")), _dns_from_wire(w.get("nodes")))
    sampling = _map(w.get("Sampling"), "Sampling")
    r.sampling = (_int(sampling.get("Count", 0), "Sampling.Count"),
                  _int(sampling.get("Total", 0), "Sampling.Total"))
    r.window = _int(w.get("Window", 0), "Window")
    r.shortcut = w.get("Shortcut", False)
    if type(r.shortcut) is not bool:
        raise _bad("Shortcut is not a boolean")
    r.plugins = _plugins_from_wire(w.get("Plugins"))
    r.id = _str(w.get("ID"), "ID")
    return r


def _dns_from_wire(value: Any) -> Dns:
    out: Dns = {}
    for addr, rec in _map(value, "DNS").items():
        rec = _map(rec, "a DNS record")
        out[_str(addr, "a DNS address")] = (_strings(rec.get("forward"), "DNS forward"),
                                            _strings(rec.get("reverse"), "DNS reverse"))
    return out


def _plugins_from_wire(value: Any) -> tuple[Plain, ...]:
    if value is None:
        return ()
    if type(value) is not list:
        raise _bad("Plugins is not a list")
    for spec in value:
        if type(spec) is not dict:
            raise _bad("a plugin spec is not a map")
    return tuple(value)


def _topology_from_wire(w: Any, t: TimeIn) -> Topology:
    w = _map(w, "a topology")
    topology = object.__new__(Topology)
    topology.shape = _str(w.get("shape"), "shape")
    topology.tag = _str(w.get("tag"), "tag")
    topology.label = _str(w.get("label"), "label")
    topology.label_plural = _str(w.get("label_plural"), "label_plural")
    topology.nodes = {_str(k, "a node id"): _node_from_wire(n, t)
                      for k, n in _map(w.get("nodes"), "nodes").items()}
    for field in ("controls", "metadata_templates", "metric_templates", "table_templates"):
        setattr(topology, field, _map(w.get(field), field))
    return topology


def _node_from_wire(w: Any, t: TimeIn) -> Node:
    if type(w) is not dict:
        raise _bad("a node is not a map")
    latest: Latest = {}
    for key, entry in _map(w.get("latest"), "latest").items():
        value = entry["value"]
        if type(value) is not str or type(key) is not str:
            raise _bad("a latest entry is not string -> {timestamp, value: string}")
        latest[key] = (t(entry["timestamp"]), value)
    metrics = {_str(k, "a metric key"): _metric_from_wire(m, t)
               for k, m in _map(w.get("metrics"), "metrics").items()}
    children = w.get("children")
    if children is not None and type(children) is not list:
        raise _bad("children is not a list")
    return Node._make(
        _str(w.get("id"), "a node id"), _str(w.get("topology"), "a node topology"),
        latest, _string_sets(w.get("sets"), "sets"),
        _strings(w.get("adjacency"), "adjacency"), _string_sets(w.get("parents"), "parents"),
        metrics, _children_of(_node_from_wire(c, t) for c in children or ()))


def _metric_from_wire(w: Any, t: TimeIn) -> Metric:
    w = _map(w, "a metric")
    samples = w.get("samples") or ()
    if type(samples) is not list and type(samples) is not tuple:
        raise _bad("metric samples are not a list")
    pairs = tuple((t(s["date"]), _number(s["value"], "a sample value")) for s in samples)
    lo = _number(w.get("min", 0.0), "metric min")
    hi = _number(w.get("max", 0.0), "metric max")
    if any(pairs[i][0] >= pairs[i + 1][0] for i in range(len(pairs) - 1)):
        return Metric(pairs, lo, hi)  # out of order or repeated times: normalize
    return Metric._make(pairs, lo, hi)
