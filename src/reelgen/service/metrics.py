"""Prometheus metrics of one service process (prometheus-client). Imports no web framework: workers use it too.

Two kinds of figures. What the job store knows (queue depth and age, jobs by state, usage and cost) is read
from the database at scrape time, so every process sharing the database reports the same values. What only
this process sees (stage latencies, worker utilization, HTTP requests and errors) is counted in-process.
"""

from __future__ import annotations

import itertools
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from reelgen.service import usage
from reelgen.service.jobs import Job, JobStatus, JobStore

log = logging.getLogger(__name__)

# Stages run from milliseconds (storing a thumbnail) to many minutes (denoising on a GPU model, a long queue).
STAGE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
DOWNLOAD_ROUTE = "download_video_content"  # its responses are timed as the `delivery` stage


class ServiceMetrics:
    """The metrics of one process, on their own registry (so several apps in one test process never clash)."""

    def __init__(self, store: JobStore | None = None, workers: int = 0, clock: Callable[[], float] = time.monotonic):
        self.registry = CollectorRegistry()
        self.stage_seconds = Histogram(
            "reelgen_job_stage_duration_seconds", "Seconds a job spent in each stage: queue_wait, model_load, "
            "encode_text, denoise, decode, render, store, and delivery per download", ["stage"],
            buckets=STAGE_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("reelgen_batch_size", "Jobs denoised together in one batched generation "
                                    "(batches of more than one)", buckets=(2, 3, 4, 6, 8, 12, 16, 32),
                                    registry=self.registry)
        self.jobs_finished = Counter("reelgen_jobs_finished", "Jobs this process's workers brought to an outcome",
                                     ["status"], registry=self.registry)
        self.requests = Counter("reelgen_http_requests", "HTTP requests by route template and status",
                                ["method", "route", "status"], registry=self.registry)
        self.request_seconds = Histogram("reelgen_http_request_duration_seconds", "HTTP request latency by route",
                                         ["route"], buckets=REQUEST_BUCKETS, registry=self.registry)
        self.errors = Counter("reelgen_http_errors", "Error responses by status and the error body's code",
                              ["status", "code"], registry=self.registry)
        self.webhook_deliveries = Counter("reelgen_webhook_deliveries", "Webhook delivery attempts by event and "
                                          "outcome: delivered, retrying (will try again) or failed (gave up)",
                                          ["event", "outcome"], registry=self.registry)
        self.utilization = WorkerUtilization(workers, clock)
        self.registry.register(self.utilization)
        if store is not None:
            self.registry.register(StoreCollector(store))

    def job_finished(self, status: str, timings: dict[str, float]) -> None:
        self.jobs_finished.labels(status).inc()
        for stage, seconds in timings.items():
            self.stage_seconds.labels(stage).observe(seconds)


class WorkerUtilization(Collector):
    """Busy seconds of this process's workers, counting jobs still running up to the scrape."""

    def __init__(self, workers: int, clock: Callable[[], float] = time.monotonic):
        self.workers, self.clock = workers, clock
        self._lock = threading.Lock()
        self._started = clock()
        self._done = 0.0  # busy seconds of finished jobs
        self._running: dict[int, float] = {}  # start time by job run
        self._runs = itertools.count()

    @contextmanager
    def busy(self) -> Iterator[None]:
        with self._lock:
            run = next(self._runs)
            self._running[run] = self.clock()
        try:
            yield
        finally:
            with self._lock:
                self._done += self.clock() - self._running.pop(run)

    def snapshot(self) -> tuple[float, int, float]:
        """(busy seconds so far, workers busy now, busy / wall seconds of all workers since start)."""
        with self._lock:
            now = self.clock()
            busy = self._done + sum(now - start for start in self._running.values())
            running = len(self._running)
        wall = (now - self._started) * self.workers
        return busy, running, busy / wall if wall > 0 else 0.0

    def collect(self):
        busy, running, ratio = self.snapshot()
        yield CounterMetricFamily("reelgen_worker_busy_seconds", "Seconds this process's workers spent running "
                                  "jobs; rate() / reelgen_workers is utilization", value=busy)
        yield GaugeMetricFamily("reelgen_workers", "Worker threads in this process", value=self.workers)
        yield GaugeMetricFamily("reelgen_workers_busy", "Workers of this process running a job now", value=running)
        yield GaugeMetricFamily("reelgen_worker_utilization_ratio", "Busy seconds / wall seconds of this "
                                "process's workers since it started", value=ratio)


class StoreCollector(Collector):
    """Figures read from the job store at scrape time, the same from every process."""

    def __init__(self, store: JobStore, clock: Callable[[], float] = time.time):
        self.store, self.clock = store, clock

    def collect(self):
        up = GaugeMetricFamily("reelgen_store_up", "1 if the job store answered this scrape")
        try:
            families = list(self._families())
        except Exception:  # a scrape must still answer, saying the database did not
            log.warning("metrics: the job store did not answer", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _families(self):
        with Session(self.store.engine) as session:
            counts = dict(session.execute(select(Job.status, func.count()).group_by(Job.status)).all())
            oldest = session.scalar(select(func.min(Job.created_at)).where(Job.status == JobStatus.QUEUED))
        jobs = GaugeMetricFamily("reelgen_jobs", "Jobs in the store by state", labels=["state"])
        for state in JobStatus:
            jobs.add_metric([state.value], counts.get(state.value, 0))
        yield jobs
        yield GaugeMetricFamily("reelgen_queue_depth", "Jobs waiting for a worker",
                                value=counts.get(JobStatus.QUEUED.value, 0))
        yield GaugeMetricFamily("reelgen_queue_oldest_age_seconds", "Age of the oldest queued job (0: none queued)",
                                value=max(0.0, self.clock() - oldest) if oldest is not None else 0.0)

        total = usage.totals(self.store, None)
        seconds = GaugeMetricFamily("reelgen_usage_compute_seconds", "Generation seconds of the jobs in the store, "
                                    "by device kind", labels=["device"])
        for device, value in total["compute_seconds"].items():
            seconds.add_metric([device], value)
        yield seconds
        yield GaugeMetricFamily("reelgen_usage_bytes_stored", "Bytes of video files the jobs in the store wrote",
                                value=total["bytes_stored"])
        yield GaugeMetricFamily("reelgen_usage_bytes_served", "Bytes of video files downloaded",
                                value=total["bytes_served"])
        cost = GaugeMetricFamily("reelgen_usage_estimated_cost", "Estimated cost of the jobs in the store at the "
                                 "configured prices, by component", labels=["component"])
        for component in usage.COMPONENTS:
            cost.add_metric([component], total["estimated_cost"][component])
        yield cost


class MetricsMiddleware:
    """Pure ASGI (no buffering of streamed downloads): counts requests by route template, errors by code,
    and times downloads as the `delivery` stage."""

    def __init__(self, app, metrics: ServiceMetrics):
        self.app, self.metrics = app, metrics

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets if the app raises before it answers
        error_body: bytearray | None = None

        async def watch(message) -> None:
            nonlocal status, error_body
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = dict(message.get("headers", []))
                if status >= 400 and headers.get(b"content-type", b"").startswith(b"application/json"):
                    error_body = bytearray()
            elif message["type"] == "http.response.body" and error_body is not None:
                error_body += message.get("body", b"")[:65536]
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            seconds = time.perf_counter() - start
            route = scope.get("route")  # set by the router on a match; unmatched paths share one label
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], template, str(status)).inc()
            self.metrics.request_seconds.labels(template).observe(seconds)
            if status >= 400:
                self.metrics.errors.labels(str(status), _error_code(error_body)).inc()
            if getattr(route, "name", None) == DOWNLOAD_ROUTE and status in (200, 206):
                self.metrics.stage_seconds.labels("delivery").observe(seconds)


def _error_code(body: bytearray | None) -> str:
    """The `code` of an OpenAI error body, 'none' when it has none."""
    try:
        return str(json.loads(bytes(body))["error"]["code"] or "none")
    except (TypeError, ValueError, KeyError):
        return "none"
