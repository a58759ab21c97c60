"""Prometheus metrics of one server, on their own registry (tests run several servers at once).

Series (all prefixed ``adindex_``):

    rpc_duration_seconds{method,code}     histogram: arrival (handler lookup) to reply; _count
                                          is the number of calls by method and status
    rpc_queue_seconds{method}             histogram: arrival to a worker picking the call up
    rpc_rejected_total{reason}            queue_full (approximate, see ``ActiveCalls``), draining
    rpc_active                            calls accepted and not finished (queued + running)
    batch_size                            histogram: queries per FAISS search call (1 = single path)
    index_info{version,model,factory}     1 for the version being served
    ads{state}                            total / eligible / paused, as GetIndexInfo reports them
    index_events_total{event}             loaded, swapped, refused, freed
    index_load_seconds                    histogram: load + verify + validate time of a version
    shadow_recall{version}                histogram of recall@k of sampled live queries vs exact
    shadow_queries_total{outcome}         measured / dropped (queue full) / skipped (capped) /
                                          retired (its version was replaced before measuring)
    operating_point{version,param}        the default nprobe and k_factor now served
    operating_point_moves_total{version,direction}  raise / lower moves by the recall controller
    recall_control_samples_total{version} live calls measured for the controller
    recall_control_recall{version,stat}   recall@k at the current point since it became
                                          current: mean, lower, upper (bounds of the mean)
    recall_control_settled{version}       1 once the current point has enough samples
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

logger = logging.getLogger(__name__)

_LATENCY_BUCKETS_S = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.004,
    0.006,
    0.008,
    0.012,
    0.016,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
)
_BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 128)
_RECALL_BUCKETS = (0.5, 0.7, 0.8, 0.85, 0.9, 0.925, 0.95, 0.97, 0.98, 0.99, 0.999, 1.0)


@dataclass
class Metrics:
    """Every series the server exports; create one per server."""

    registry: CollectorRegistry = field(
        default_factory=lambda: CollectorRegistry(auto_describe=True)
    )

    def __post_init__(self) -> None:
        self._init_rpc(self.registry)
        self._init_index(self.registry)
        self._init_shadow(self.registry)
        self._init_control(self.registry)
        for event in ("loaded", "swapped", "refused", "freed"):
            self.index_events.labels(event)  # export zeros so dashboards see the series
        for reason in ("queue_full", "draining"):
            self.rpc_rejected.labels(reason)
        self._info_labels: tuple[str, str, str] | None = None
        self._info_lock = threading.Lock()

    def _init_rpc(self, r: CollectorRegistry) -> None:
        self.rpc_duration = Histogram(
            "adindex_rpc_duration_seconds",
            "Time from a call's arrival to its reply, by method and status code",
            ["method", "code"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.rpc_queue = Histogram(
            "adindex_rpc_queue_seconds",
            "Time a call waited for a worker thread",
            ["method"],
            buckets=_LATENCY_BUCKETS_S,
            registry=r,
        )
        self.rpc_rejected = Counter(
            "adindex_rpc_rejected_total",
            "Calls refused before running: queue_full (RESOURCE_EXHAUSTED), draining (UNAVAILABLE)",
            ["reason"],
            registry=r,
        )
        self.rpc_active = Gauge(
            "adindex_rpc_active", "Calls accepted and not yet finished", registry=r
        )
        self.batch_size = Histogram(
            "adindex_batch_size",
            "Queries answered by one FAISS search call",
            buckets=_BATCH_BUCKETS,
            registry=r,
        )

    def _init_index(self, r: CollectorRegistry) -> None:
        self.index_info = Gauge(
            "adindex_index_info",
            "1 for the index version being served",
            ["version", "model", "factory"],
            registry=r,
        )
        self.ads = Gauge("adindex_ads", "Ads of the served index", ["state"], registry=r)
        self.index_events = Counter(
            "adindex_index_events_total",
            "Index versions loaded, swapped in, refused by validation, freed",
            ["event"],
            registry=r,
        )
        self.index_load = Histogram(
            "adindex_index_load_seconds",
            "Time to load, verify and validate one version",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
            registry=r,
        )

    def _init_shadow(self, r: CollectorRegistry) -> None:
        self.shadow_recall = Histogram(
            "adindex_shadow_recall",
            "recall@k of sampled live queries against exact search over the same eligible ads",
            ["version"],
            buckets=_RECALL_BUCKETS,
            registry=r,
        )
        self.shadow_queries = Counter(
            "adindex_shadow_queries_total",
            "Sampled live queries by outcome: measured, dropped (queue full), skipped, retired",
            ["outcome"],
            registry=r,
        )

    def _init_control(self, r: CollectorRegistry) -> None:
        self.operating_point = Gauge(
            "adindex_operating_point",
            "Default search point of the served version (param: nprobe, k_factor)",
            ["version", "param"],
            registry=r,
        )
        self.operating_point_moves = Counter(
            "adindex_operating_point_moves_total",
            "Moves of a version's default point by the recall controller",
            ["version", "direction"],
            registry=r,
        )
        self.recall_control_samples = Counter(
            "adindex_recall_control_samples_total",
            "Sampled live calls measured for the recall controller (unfiltered, default point)",
            ["version"],
            registry=r,
        )
        self.recall_control_recall = Gauge(
            "adindex_recall_control_recall",
            "recall@k at the current default point since it became current (stat: mean, "
            "lower, upper bound of the mean)",
            ["version", "stat"],
            registry=r,
        )
        self.recall_control_settled = Gauge(
            "adindex_recall_control_settled",
            "1 once the current default point has enough samples, 0 while shadow samples more",
            ["version"],
            registry=r,
        )

    def set_index(self, version: str, model: str, factory: str) -> None:
        """Point ``adindex_index_info`` at the version now served (the previous one is removed)."""
        with self._info_lock:
            if self._info_labels is not None:
                self.index_info.remove(*self._info_labels)
            self._info_labels = (version, model, factory)
            self.index_info.labels(*self._info_labels).set(1)

    def watch_ads(self, counts: Callable[[], tuple[int, int]]) -> None:
        """Export ad counts read at scrape time from ``counts() -> (ads, eligible)``."""
        self.ads.labels("total").set_function(lambda: counts()[0])
        self.ads.labels("eligible").set_function(lambda: counts()[1])
        self.ads.labels("paused").set_function(lambda: counts()[0] - counts()[1])


class MetricsHttp:
    """The ``/metrics`` HTTP endpoint (prometheus-client's own server thread)."""

    def __init__(self, metrics: Metrics, host: str, port: int):
        self._server: WSGIServer
        self._server, self._thread = start_http_server(port, addr=host, registry=metrics.registry)
        self.port = int(self._server.server_port)
        logger.info("Metrics on http://%s:%d/metrics", host, self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
