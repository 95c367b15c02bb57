"""Prometheus metrics, one registry per app (no process globals, so tests stay apart)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "pqsync_http_requests",
            "HTTP requests answered, by route template and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.request_seconds = Histogram(
            "pqsync_http_request_duration_seconds",
            "Time to answer HTTP requests, by route template.",
            ["route"],
            registry=self.registry,
        )
        self.sync_runs = Counter(
            "pqsync_sync_runs",
            "Sync runs finished, by scope, outcome and trigger.",
            ["scope", "status", "trigger"],
            registry=self.registry,
        )

    def watch(self, collect: Callable[[], Iterator[Metric]]) -> None:
        """Add gauges read at each scrape (from the database, so every process agrees)."""
        self.registry.register(_Scraped(collect))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _Scraped(Collector):
    def __init__(self, collect: Callable[[], Iterator[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterator[Metric]:
        return self._collect()
