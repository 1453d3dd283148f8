"""The Temporal SDK's own metrics (workflow task latency, activity latency and failures, sticky cache, polls,
client requests) in this process's Prometheus ``/metrics``, beside Lapse's (``activities.metrics``).

Every client Lapse makes goes through ``store.temporal.connect``, which gives it :func:`metrics_runtime`: a
Temporal runtime whose Core records into a :class:`~temporalio.runtime.MetricBuffer`. A collector in
prometheus-client's default registry drains the buffer (every second, and at each scrape) and keeps the totals:
counters as ``<name>_total``, durations as ``<name>_seconds`` histograms, gauges as they are.

Why a buffer rather than Core's own Prometheus server (``PrometheusConfig(bind_address=...)``): that one is a
second HTTP port per process, which two workers on one host (systemd's ``lapse-worker@1`` and ``@2``) would have
to be given apart; a scrape would wait on a second HTTP fetch and fail with it; and its text would have to be
merged with ours (HELP and TYPE lines, names). The buffer needs none of that: one port, one registry.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cache

from prometheus_client import REGISTRY
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from temporalio.runtime import (
    BUFFERED_METRIC_KIND_COUNTER,
    BUFFERED_METRIC_KIND_HISTOGRAM,
    BufferedMetricUpdate,
    LogForwardingConfig,
    LoggingConfig,
    MetricBuffer,
    MetricBufferDurationFormat,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)

log = logging.getLogger(__name__)

BUFFER_SIZE = 200_000
"""Updates Core may hold between two drains (one per workflow task, poll, request...; drained every second)."""
DRAIN_EVERY = 1.0
SECONDS_BUCKETS: Sequence[float] = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900)
"""Latency buckets: workflow tasks take milliseconds; a long poll or schedule-to-start under load, minutes."""
OTHER_BUCKETS: Sequence[float] = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)

Labels = tuple[tuple[str, str], ...]


@dataclass
class _Series:
    """One metric's values by label set: a counter's total, a gauge's last value, or a histogram's buckets."""

    name: str
    kind: int
    documentation: str
    buckets: Sequence[float] = ()
    values: dict[Labels, float] = field(default_factory=dict)
    counts: dict[Labels, list[int]] = field(default_factory=dict)
    sums: dict[Labels, float] = field(default_factory=dict)

    def record(self, labels: Labels, value: float) -> None:
        if self.kind == BUFFERED_METRIC_KIND_COUNTER:
            self.values[labels] = self.values.get(labels, 0.0) + value
        elif self.kind == BUFFERED_METRIC_KIND_HISTOGRAM:
            counts = self.counts.setdefault(labels, [0] * (len(self.buckets) + 1))
            counts[next((i for i, bound in enumerate(self.buckets) if value <= bound), len(self.buckets))] += 1
            self.sums[labels] = self.sums.get(labels, 0.0) + value
        else:
            self.values[labels] = value

    def family(self) -> Metric:
        if self.kind == BUFFERED_METRIC_KIND_COUNTER:
            metric = Metric(self.name, self.documentation, "counter")
            for labels, value in self.values.items():
                metric.add_sample(f"{self.name}_total", dict(labels), value)
        elif self.kind == BUFFERED_METRIC_KIND_HISTOGRAM:
            metric = Metric(self.name, self.documentation, "histogram")
            for labels, counts in self.counts.items():
                running = 0
                for bound, count in zip([*self.buckets, float("inf")], counts, strict=True):
                    running += count
                    metric.add_sample(f"{self.name}_bucket", {**dict(labels), "le": _le(bound)}, running)
                metric.add_sample(f"{self.name}_count", dict(labels), running)
                metric.add_sample(f"{self.name}_sum", dict(labels), self.sums[labels])
        else:
            metric = Metric(self.name, self.documentation, "gauge")
            for labels, value in self.values.items():
                metric.add_sample(self.name, dict(labels), value)
        return metric


class TemporalMetrics(Collector):
    """prometheus-client's view of a :class:`MetricBuffer`: the totals of every update drained so far."""

    def __init__(self, buffer: MetricBuffer) -> None:
        self._buffer = buffer
        self._lock = threading.Lock()
        self._series: dict[int, _Series] = {}
        self._labels: dict[int, Labels] = {}

    def drain(self) -> None:
        """Fold the updates Core buffered since the last drain into the totals."""
        with self._lock:
            for update in self._buffer.retrieve_updates():
                self._record(update)

    def _record(self, update: BufferedMetricUpdate) -> None:
        # Core hands the same metric and attribute-set objects back each time: their ids key the caches.
        metric = update.metric
        series = self._series.get(id(metric))
        if series is None:
            series = self._series[id(metric)] = _series_of(metric.name, metric.kind, metric.unit, metric.description)
        attributes = update.attributes
        labels = self._labels.get(id(attributes))
        if labels is None:
            labels = self._labels[id(attributes)] = tuple(sorted((k, str(v)) for k, v in attributes.items()))
        series.record(labels, float(update.value))

    def collect(self) -> Iterator[Metric]:
        self.drain()
        with self._lock:
            families = [series.family() for series in self._series.values()]
        yield from families


def _le(bound: float) -> str:
    """A bucket's bound as Prometheus writes it (``+Inf``, ``0.5``, ``1.0``)."""
    return "+Inf" if bound == float("inf") else repr(float(bound))


def _series_of(name: str, kind: int, unit: str | None, description: str | None) -> _Series:
    """A Core metric under Prometheus's conventions: ``_total`` on counters, ``_seconds`` on durations."""
    if kind == BUFFERED_METRIC_KIND_HISTOGRAM:
        seconds = unit in ("s", "seconds", "duration")
        name = f"{name}_seconds" if seconds and not name.endswith("_seconds") else name
        buckets = SECONDS_BUCKETS if seconds else OTHER_BUCKETS
        return _Series(name, kind, description or name, buckets)
    if kind == BUFFERED_METRIC_KIND_COUNTER:
        name = name.removesuffix("_total")
    return _Series(name, kind, description or name)


@cache
def metrics_runtime() -> Runtime:
    """This process's Temporal runtime, its metrics collected into the default Prometheus registry (made once)."""
    buffer = MetricBuffer(BUFFER_SIZE, MetricBufferDurationFormat.SECONDS)
    # No service_name label: it is the same on every series ("temporal-core-sdk").
    # Core's own warnings (a slow workflow task, a task gone missing) go through Python's logging like every other
    # line, in the process's format (JSON lines too), instead of to stderr as coloured text.
    core_logs = LoggingConfig(
        filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
        forwarding=LogForwardingConfig(logger=logging.getLogger("temporalio.core")),
    )
    runtime = Runtime(telemetry=TelemetryConfig(logging=core_logs, metrics=buffer, attach_service_name=False))
    collector = TemporalMetrics(buffer)
    REGISTRY.register(collector)
    threading.Thread(target=_drain_forever, args=(collector,), name="temporal-metrics", daemon=True).start()
    return runtime


def _drain_forever(collector: TemporalMetrics) -> None:
    """Keep Core's buffer from filling between scrapes (a full buffer drops updates)."""
    stop = threading.Event()
    while not stop.wait(DRAIN_EVERY):
        try:
            collector.drain()
        except Exception:
            log.exception("draining the Temporal SDK's metrics failed")
