"""prometheus_client's metrics and registry, without its HTTP servers, and the text
exposition of a registry.

`import prometheus_client` runs an `__init__` that imports its exposition module, which
imports http.server, http.client, urllib.request, email and mimetypes (1.6 MB and ~40
modules in every host's preloading supervisor) for servers and push gateways we do not use: our
services serve /metrics on their own HTTP server (shared/metrics.py). Here the package is
registered bare (shared/imports.py) and only the metric modules are imported;
`generate_latest` writes the Prometheus text format, version 0.0.4, the one Weave Net's
Go router serves. Every module of this project takes prometheus_client from here; where
the whole package was imported first, or is asked for later (`from prometheus_client
import X` completes it), its classes are these same objects.
"""
from __future__ import annotations

import re

from shared.imports import bare_package

bare_package("prometheus_client", init_on_use=True)  # whole again for whoever asks it for more

from prometheus_client.gc_collector import GCCollector  # noqa: E402
from prometheus_client.metrics import Counter, Gauge, Histogram, Summary  # noqa: E402
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric  # noqa: E402
from prometheus_client.platform_collector import PlatformCollector  # noqa: E402
from prometheus_client.process_collector import ProcessCollector  # noqa: E402
from prometheus_client.registry import Collector, CollectorRegistry  # noqa: E402
from prometheus_client.utils import floatToGoString  # noqa: E402

__all__ = ["CONTENT_TYPE", "Collector", "CollectorRegistry", "Counter", "CounterMetricFamily", "GCCollector",
           "Gauge", "GaugeMetricFamily", "Histogram", "Metric", "PlatformCollector", "ProcessCollector", "Summary",
           "generate_latest"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_NOT_METRIC_CHAR = re.compile(r"[^a-zA-Z0-9_:]")
_NOT_LABEL_CHAR = re.compile(r"[^a-zA-Z0-9_]")
# OpenMetrics types written as the text format's (prometheus_client does the same)
_TYPE = {"info": "gauge", "stateset": "gauge", "gaugehistogram": "histogram", "unknown": "untyped"}
_SUFFIX = {"counter": "_total", "info": "_info"}
_OPENMETRICS_ONLY = ("_created", "_gsum", "_gcount")  # samples the text format carries as separate gauges


def _name(name: str, valid: re.Pattern, invalid: re.Pattern) -> str:
    """A name in the legacy character set, others replaced by '_' (a leading digit too)."""
    if valid.fullmatch(name):
        return name
    name = invalid.sub("_", name)
    return "_" + name[1:] if name[:1].isdigit() else name


def _label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _sample(sample) -> str:
    labels = ""
    if sample.labels:
        labels = "{" + ",".join(f'{_name(k, _LABEL_NAME, _NOT_LABEL_CHAR)}="{_label_value(v)}"'
                                for k, v in sorted(sample.labels.items())) + "}"
    timestamp = "" if sample.timestamp is None else f" {int(float(sample.timestamp) * 1000):d}"
    return f"{_name(sample.name, _METRIC_NAME, _NOT_METRIC_CHAR)}{labels} {floatToGoString(sample.value)}{timestamp}\n"


def generate_latest(registry: Collector) -> bytes:
    """Every metric `registry` collects, in the Prometheus text format (0.0.4)."""
    out: list[str] = []
    for metric in registry.collect():
        name = _name(metric.name + _SUFFIX.get(metric.type, ""), _METRIC_NAME, _NOT_METRIC_CHAR)
        out.append(f"# HELP {name} {_help(metric.documentation)}\n")
        out.append(f"# TYPE {name} {_TYPE.get(metric.type, metric.type)}\n")
        separate: dict[str, list[str]] = {}
        for sample in metric.samples:
            suffix = next((s for s in _OPENMETRICS_ONLY if sample.name == metric.name + s), None)
            if suffix is None:
                out.append(_sample(sample))
            else:
                separate.setdefault(suffix, []).append(_sample(sample))
        for suffix, lines in sorted(separate.items()):
            name = _name(metric.name + suffix, _METRIC_NAME, _NOT_METRIC_CHAR)
            out.append(f"# HELP {name} {_help(metric.documentation)}\n# TYPE {name} gauge\n")
            out.extend(lines)
    return "".join(out).encode()
