"""Prometheus metrics of the scoring service (one registry per service, served at `/metrics`).

| metric | type | labels |
|---|---|---|
| `featurelib_serve_request_seconds` | histogram | transport, endpoint |
| `featurelib_serve_requests_total` | counter | transport, endpoint, model, model_version, status |
| `featurelib_serve_in_flight` | gauge | transport |
| `featurelib_serve_feature_status_total` | counter | service, feature, status |
| `featurelib_serve_prediction` | histogram | model, model_version |
| `featurelib_serve_shadow_total` | counter | model, model_version, outcome |
| `featurelib_serve_shadow_abs_diff` | histogram | model, model_version (vs. the live answer) |
| `featurelib_serve_model_alias` | gauge | model, alias (value: the version it points to) |
| `featurelib_serve_reloads_total` | counter | outcome (ok/failed) |
| `featurelib_serve_store_unavailable_total` | counter | outcome (error/defaults) |

Shadow outcomes: scored, failed, dropped (pool full). `status` is the HTTP status code on both
transports (a gRPC error counts as the HTTP status of the same error), so one query covers both.
`model`/`model_version` are empty for requests that did not reach a model (feature
endpoints, errors before routing).
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Mapping, Sequence

import numpy as np
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (
    0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5,
    1.0, 2.0, 5.0,
)  # fmt: skip
PROBABILITY_BUCKETS = tuple(round(0.1 * i, 1) for i in range(1, 11))
DIFF_BUCKETS = (0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


class ServeMetrics:
    """The service's metric families on their own registry (never the global default one, so
    two services in one process, e.g. in tests, do not collide)."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.latency = Histogram(
            "featurelib_serve_request_seconds",
            "Request latency (seconds) by transport and endpoint",
            ("transport", "endpoint"),
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.requests = Counter(
            "featurelib_serve_requests",
            "Requests by transport, endpoint, model, answering version and status code",
            ("transport", "endpoint", "model", "model_version", "status"),
            registry=r,
        )
        self.in_flight = Gauge(
            "featurelib_serve_in_flight", "Requests being served", ("transport",), registry=r
        )
        self.feature_status = Counter(
            "featurelib_serve_feature_status",
            "Served feature values by feature and status (PRESENT, NOT_FOUND, ...)",
            ("service", "feature", "status"),
            registry=r,
        )
        self.prediction = Histogram(
            "featurelib_serve_prediction",
            "Predictions returned, by model and version",
            ("model", "model_version"),
            buckets=PROBABILITY_BUCKETS,
            registry=r,
        )
        self.shadow = Counter(
            "featurelib_serve_shadow",
            "Shadow scorings by model version and outcome (scored, failed, dropped)",
            ("model", "model_version", "outcome"),
            registry=r,
        )
        self.shadow_diff = Histogram(
            "featurelib_serve_shadow_abs_diff",
            "Absolute difference between a shadow prediction and the live answer, per row",
            ("model", "model_version"),
            buckets=DIFF_BUCKETS,
            registry=r,
        )
        self.alias = Gauge(
            "featurelib_serve_model_alias",
            "Version each served alias points to",
            ("model", "alias"),
            registry=r,
        )
        self.reloads = Counter(
            "featurelib_serve_reloads",
            "Model snapshot reloads by outcome",
            ("outcome",),
            registry=r,
        )
        self._feature_children: dict[tuple[str, str, str], Counter] = {}
        self.store_unavailable = Counter(
            "featurelib_serve_store_unavailable",
            "Requests that met an unavailable online store, by outcome (error, defaults)",
            ("outcome",),
            registry=r,
        )

    def observe_request(
        self,
        transport: str,
        endpoint: str,
        seconds: float,
        status: int,
        model: str = "",
        model_version: str = "",
    ) -> None:
        self.latency.labels(transport, endpoint).observe(seconds)
        self.requests.labels(transport, endpoint, model, model_version, str(status)).inc()

    def observe_features(self, service: str, statuses: Mapping[str, Sequence[str]]) -> None:
        """Count each served value's status (one increment per feature and status seen)."""
        children = self._feature_children
        for feature, values in statuses.items():
            counts = Tally(values) if len(values) > 1 else {values[0]: 1} if values else {}
            for status, count in counts.items():
                key = (service, feature, status)
                child = children.get(key)
                if child is None:  # labels() costs a lock and a tuple build: once per series
                    child = children[key] = self.feature_status.labels(service, feature, status)
                child.inc(count)

    def observe_predictions(self, model: str, version: int, predictions: np.ndarray) -> None:
        histogram = self.prediction.labels(model, str(version))
        for value in predictions[:64].tolist():  # a sample of big batches is enough
            histogram.observe(value)

    def observe_shadow(
        self, model: str, version: int, outcome: str, diff: np.ndarray | None = None
    ) -> None:
        self.shadow.labels(model, str(version), outcome).inc()
        if diff is not None:
            histogram = self.shadow_diff.labels(model, str(version))
            for value in diff[:64].tolist():
                histogram.observe(value)

    def set_aliases(self, model: str, aliases: Mapping[str, int]) -> None:
        for alias, version in aliases.items():
            self.alias.labels(model, alias).set(version)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
