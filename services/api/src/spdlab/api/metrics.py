"""Prometheus metrics: requests, latencies, jobs by state, queue depth (the last two at scrape)."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from spdlab.common.broker import queue_depths
from spdlab.common.db import session_factory
from spdlab.common.models import JOB_STATUSES, Job
from spdlab.common.settings import Settings

log = logging.getLogger(__name__)


class JobStateCollector(Collector):
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def collect(self) -> Iterator[GaugeMetricFamily]:
        jobs = GaugeMetricFamily("spdlab_jobs", "Jobs by state", labels=["state"])
        try:
            with session_factory(self.settings.effective_database_url)() as session:
                counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            for state in JOB_STATUSES:
                jobs.add_metric([state], counts.get(state, 0))
        except Exception as exc:
            log.warning("jobs metric unavailable: %s", exc)
        yield jobs
        depth = GaugeMetricFamily("spdlab_queue_depth", "Messages waiting per queue", labels=["queue"])
        try:
            for queue, n in queue_depths(self.settings).items():
                depth.add_metric([queue], n)
        except Exception as exc:
            log.warning("queue depth metric unavailable: %s", exc)
        yield depth


class Metrics:
    def __init__(self, settings: Settings) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("spdlab_http_requests", "HTTP requests", ["method", "route", "status"],
                                registry=self.registry)
        self.latency = Histogram("spdlab_http_request_duration_seconds", "HTTP request latency",
                                 ["method", "route"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.registry.register(JobStateCollector(settings))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(scope["method"], route).observe(time.perf_counter() - start)
