"""Prometheus metrics, one registry per app (no process globals, so tests stay apart).

`pqsync serve --workers N` runs N processes; it points PROMETHEUS_MULTIPROC_DIR at a fresh
directory before they start, so that prometheus_client keeps counters in files there and
any process's /metrics answers the sum over all of them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess
from prometheus_client.core import Metric
from prometheus_client.registry import Collector


class Metrics:
    def __init__(self, multiprocess_dir: str | None = None) -> None:
        self.multiprocess_dir = multiprocess_dir or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        self._watched: list[Collector] = []
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
        scraped = _Scraped(collect)
        self._watched.append(scraped)
        self.registry.register(scraped)

    def render(self) -> bytes:
        if not self.multiprocess_dir:
            return generate_latest(self.registry)
        # Counters and histograms summed over every process's files, plus this one's gauges.
        combined = CollectorRegistry()
        multiprocess.MultiProcessCollector(combined, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        for collector in self._watched:
            combined.register(collector)
        return generate_latest(combined)


class _Scraped(Collector):
    def __init__(self, collect: Callable[[], Iterator[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterator[Metric]:
        return self._collect()
