"""`reelgen worker`: the generation side of the service in a process of its own.

Beside `reelgen serve --workers 0`, which then only answers the API, any number of worker processes share
its job store and object store: each claims queued jobs with its own lease-holding threads (the local
executor), runs them with the same JobRunner and recovers the expired leases of dead workers. Like a Ray
replica, it loads its models before it claims a job.

Which process runs what in that layout: the API process queues jobs, sends webhooks and sweeps files past
retention; the workers generate. Both recover leases, an idempotent write fenced in the store.

A worker never imports FastAPI: its metrics go out through prometheus_client's own HTTP server.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from prometheus_client import start_http_server

from reelgen.backends.base import Generator
from reelgen.service.executors import LocalExecutor
from reelgen.service.executors.generators import build_generators
from reelgen.service.housekeeping import Housekeeper
from reelgen.service.jobs import JobStore
from reelgen.service.metrics import ServiceMetrics
from reelgen.service.settings import ServiceSettings
from reelgen.service.storage import ObjectStore

log = logging.getLogger(__name__)


class Worker:
    def __init__(self, settings: ServiceSettings, generators: Sequence[Generator] | None = None):
        if settings.executor != "local":
            raise ValueError("a reelgen worker runs jobs in its own threads: executor must be local "
                             "(with Ray, `reelgen serve --executor ray` runs the replicas)")
        if settings.workers < 1:
            raise ValueError("a reelgen worker needs at least one worker thread (--workers 1 or more)")
        self.settings = settings
        self.store = JobStore(settings.database_url, lease_seconds=settings.lease_seconds,
                              max_attempts=settings.max_attempts, retention_seconds=settings.retention_seconds)
        storage = ObjectStore.from_settings(settings)
        self.metrics = ServiceMetrics(self.store, workers=settings.workers)
        generators = build_generators(settings) if generators is None else generators
        self.executor = LocalExecutor.from_settings(settings, self.store, storage, generators, self.metrics)
        self.housekeeper = Housekeeper(self.store, storage, self.executor, settings.housekeeping_seconds,
                                       sweep_files=False)

    def run(self, stop: threading.Event, metrics_address: tuple[str, int] | None = None) -> None:
        """Claim and run jobs until `stop` is set (SIGTERM), then give the running ones `shutdown_grace_seconds`
        to finish before they go back to the queue."""
        self.store.create_schema()  # the first process of a new deployment may be a worker
        server = None
        if metrics_address is not None:
            server, _ = start_http_server(metrics_address[1], metrics_address[0], registry=self.metrics.registry)
            log.info("metrics on http://%s:%d/metrics", metrics_address[0], server.server_port)
        for model, generator in self.executor.runner.generators.items():  # once, here: a job never waits for weights
            log.info("loaded %s in %.2fs", model, generator.load())
        self.housekeeper.run_once()
        self.executor.start()
        self.housekeeper.start()
        log.info("worker %s: %d thread(s) serving %s", self.executor.name, self.settings.workers,
                 ", ".join(self.executor.runner.generators))
        try:
            stop.wait()
        finally:
            log.info("stopping: no new jobs; running ones get %.0fs", self.settings.shutdown_grace_seconds)
            self.executor.stop(self.settings.shutdown_grace_seconds)
            self.housekeeper.stop()
            if server is not None:
                server.shutdown()
            self.store.close()
