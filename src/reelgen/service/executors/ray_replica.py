"""One replica of the Ray executor: a Ray actor that loads its models once and runs the jobs it is sent.

It runs in a Ray worker process, anywhere in the cluster, and reaches the job store and object store itself
(so on more than one machine they must be shared: PostgreSQL and S3, not SQLite and a local folder). It
imports torch (through the generators) and never FastAPI; the service process imports neither torch nor this
module's models.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

import ray

from reelgen.service import logs
from reelgen.service.executors.generators import build_generators
from reelgen.service.executors.runner import JobRunner
from reelgen.service.jobs import JobStatus, JobStore
from reelgen.service.settings import ServiceSettings
from reelgen.service.storage import ObjectStore
from reelgen.service.usage import Prices

log = logging.getLogger(__name__)


class Replica:
    """Runs as a threaded actor: `run` calls take job slots while `ping` and `abort` still answer."""

    def __init__(self, settings: ServiceSettings, name: str):
        # Ray keeps a worker's stderr in its session logs (`ray logs`), in the service's format
        logs.configure("info", settings.log_format)
        self.name = name
        generators = build_generators(settings)
        for generator in generators:  # once, here: a job never waits for weights
            seconds = generator.load()
            log.info("replica %s loaded %s in %.2fs", name, generator.spec.id, seconds)
        self.store = JobStore(settings.database_url, lease_seconds=settings.lease_seconds,
                              max_attempts=settings.max_attempts, retention_seconds=settings.retention_seconds)
        self.runner = JobRunner(self.store, ObjectStore.from_settings(settings), {g.spec.id: g for g in generators},
                                settings.heartbeat_seconds, prices=Prices.from_settings(settings))
        self._abort = threading.Event()

    def info(self) -> dict:
        """Where this replica runs; answering it also says the models are loaded."""
        return {"name": self.name, "node_id": ray.get_runtime_context().get_node_id(),
                "host": socket.gethostname(), "pid": os.getpid()}

    def ping(self) -> bool:
        return True

    def run(self, job_id: str, token: int) -> None:
        """Run a job the service claimed for this replica under lease `token`; its outcome goes to the store."""
        job = self.store.get(job_id)
        if job is None or job.lease_token != token or job.status != JobStatus.IN_PROGRESS:
            return  # cancelled, deleted or re-claimed while on its way here: no longer this replica's
        with logs.job_context(job_id):
            log.info("replica %s runs %s (attempt %d)", self.name, job_id, job.attempts)
            self.runner.run(job, self._abort)

    def abort(self) -> None:
        """Shutdown: running jobs stop within a step and go back to the queue."""
        self._abort.set()
