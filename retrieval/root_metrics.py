"""Prometheus metrics of ``adindex root`` (its own registry; one per root).

Series (all prefixed ``adindex_root_``):

    rpc_duration_seconds{method,code}   histogram: arrival to reply, by method and status
    partial_total                       Retrieve answers missing at least one shard
    leaf_calls_total{shard,outcome}     fan-out calls by outcome: ok, deadline_exceeded,
                                        unavailable, other_version, refused, error
    leaf_seconds{shard}                 histogram: one leaf call, as the root saw it
    leaves_answering                    leaves whose last status poll was answered
    version_info{version}               1 for the version calls are pinned to
    version_switches_total              times the pin moved to a new version
"""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from retrieval.metrics import _LATENCY_BUCKETS_S as LATENCY_BUCKETS_S

OUTCOMES = ("ok", "deadline_exceeded", "unavailable", "other_version", "refused", "error")


class RootMetrics:
    """Every series the root exports."""

    def __init__(self, shards: int):
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.rpc_duration = Histogram(
            "adindex_root_rpc_duration_seconds",
            "Time from a call's arrival at the root to its reply, by method and status code",
            ["method", "code"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.partial = Counter(
            "adindex_root_partial",
            "Retrieve answers merged from fewer than every shard",
            registry=r,
        )
        self.leaf_calls = Counter(
            "adindex_root_leaf_calls",
            "Retrieve calls fanned out to a leaf, by shard and outcome",
            ["shard", "outcome"],
            registry=r,
        )
        self.leaf_seconds = Histogram(
            "adindex_root_leaf_seconds",
            "One fanned-out Retrieve call to a leaf, as the root saw it",
            ["shard"],
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.leaves_answering = Gauge(
            "adindex_root_leaves_answering", "Leaves whose last status poll answered", registry=r
        )
        self.version_info = Gauge(
            "adindex_root_version_info",
            "1 for the version calls are pinned to",
            ["version"],
            registry=r,
        )
        self.version_switches = Counter(
            "adindex_root_version_switches", "Times the pinned version moved", registry=r
        )
        for shard in range(shards):  # export zeros so dashboards see every series
            for outcome in OUTCOMES:
                self.leaf_calls.labels(str(shard), outcome)
        self._version: str | None = None
        self._lock = threading.Lock()

    def set_version(self, version: str) -> None:
        with self._lock:
            if self._version is not None:
                self.version_info.remove(self._version)
            self._version = version
            self.version_info.labels(version).set(1)
