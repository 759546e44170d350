"""Prometheus metrics of the gateway (``GET /metrics``).

With several worker processes, set ``PROMETHEUS_MULTIPROC_DIR`` to an empty folder before starting the gateway
(``redline gateway --workers N`` does this itself) so that ``/metrics`` aggregates all workers.
"""

from __future__ import annotations

import os
from typing import Any, TypeVar

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

_M = TypeVar("_M", Counter, Gauge, Histogram)
_MAX_CHILDREN = 10_000

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter("redline_gateway_requests", "Requests by endpoint, provider, action and status",
                                ["endpoint", "provider", "action", "status"], registry=r)
        self.findings = Counter("redline_gateway_findings", "Findings in requests and responses",
                                ["side", "kind", "type"], registry=r)
        self.latency = Histogram("redline_gateway_request_seconds", "Total request latency as the client saw it",
                                 ["endpoint"], buckets=_LATENCY_BUCKETS, registry=r)
        self.overhead = Histogram("redline_gateway_overhead_seconds",
                                  "Time spent in the gateway itself (total minus upstream)", ["endpoint"],
                                  buckets=_LATENCY_BUCKETS, registry=r)
        self.upstream_errors = Counter("redline_gateway_upstream_errors", "Upstream failures by provider and kind",
                                       ["provider", "error"], registry=r)
        self.tokens = Counter("redline_gateway_tokens", "Tokens reported by upstreams", ["provider", "model", "type"],
                              registry=r)
        self.cost = Counter("redline_gateway_cost_usd", "Cost of upstream usage in USD", ["provider", "model"],
                            registry=r)
        self.audit_dropped = Gauge("redline_gateway_audit_dropped", "Audit events refused by a full queue",
                                   registry=r, multiprocess_mode="sum")
        self.in_flight = Gauge("redline_gateway_in_flight", "Requests being served", registry=r,
                               multiprocess_mode="livesum")
        self._children: dict[tuple[Any, ...], Any] = {}

    def child(self, metric: _M, *labels: str) -> _M:
        """``metric.labels(*labels)``, kept: the per-request path does a dict lookup, not a locked label walk."""
        key = (id(metric), *labels)
        c = self._children.get(key)
        if c is None:
            if len(self._children) >= _MAX_CHILDREN:
                self._children.clear()
            c = metric.labels(*labels)
            self._children[key] = c
        return c

    def render(self) -> tuple[bytes, str]:
        if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            reg = CollectorRegistry()
            multiprocess.MultiProcessCollector(reg)  # type: ignore[no-untyped-call]
            return generate_latest(reg), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
