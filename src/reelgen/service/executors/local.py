"""The local executor: N worker threads inside the service process, or inside a `reelgen worker` process."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence

from reelgen.backends.base import Generator, runs_batches
from reelgen.service.executors.runner import JobRunner, Lease
from reelgen.service.jobs import JobStore
from reelgen.service.logs import job_context
from reelgen.service.metrics import ServiceMetrics
from reelgen.service.settings import ServiceSettings
from reelgen.service.storage import ObjectStore
from reelgen.service.usage import Prices

log = logging.getLogger(__name__)


class LocalExecutor:
    def __init__(self, store: JobStore, runner: JobRunner, *, workers: int = 1, poll_seconds: float = 1.0,
                 batch_size: int = 1, batch_wait_seconds: float = 0.0):
        self.store = store
        self.runner = runner
        self.workers = workers
        self.poll_seconds = poll_seconds
        self.batch_size = batch_size  # jobs a worker denoises together, for generators that run batches
        self.batch_wait_seconds = batch_wait_seconds
        # unique per process, so a lease names the process that holds it
        self.name = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wakeups = threading.Semaphore(0)
        self._stopping = threading.Event()
        self._abort = threading.Event()
        self._threads: list[threading.Thread] = []

    @classmethod
    def from_settings(cls, settings: ServiceSettings, store: JobStore, storage: ObjectStore,
                      generators: Sequence[Generator], metrics: ServiceMetrics) -> LocalExecutor:
        """The executor of `reelgen serve` (threads beside the API) and of `reelgen worker` (threads alone)."""
        runner = JobRunner(store, storage, {g.spec.id: g for g in generators}, settings.heartbeat_seconds,
                           prices=Prices.from_settings(settings), metrics=metrics)
        return cls(store, runner, workers=settings.workers, poll_seconds=settings.poll_seconds,
                   batch_size=settings.batch_size, batch_wait_seconds=settings.batch_wait_ms / 1000)

    def start(self) -> None:
        self._threads = [threading.Thread(target=self._work, args=(f"{self.name}/{i}",), name=f"reelgen-worker-{i}",
                                          daemon=True) for i in range(self.workers)]
        for thread in self._threads:
            thread.start()

    def wake(self) -> None:
        self._wakeups.release()

    def stop(self, grace_seconds: float) -> None:
        self._stopping.set()
        for _ in self._threads:
            self._wakeups.release()
        deadline = time.monotonic() + grace_seconds
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in self._threads):
            log.info("jobs still running after %.0fs: stopping them and re-queueing", grace_seconds)
            self._abort.set()
        for thread in self._threads:
            thread.join()

    def _work(self, worker: str) -> None:
        while not self._stopping.is_set():
            try:
                # only jobs this process has a generator for: other processes may serve other models
                job = self.store.claim(worker, models=self.runner.generators.keys())
            except Exception:  # the database may come back; a worker thread must not die of it
                log.exception("claiming a job failed")
                job = None
            if job is None:
                self._wakeups.acquire(timeout=self.poll_seconds)
                continue
            # each job's heartbeat starts as it is claimed: waiting for partners can outlast a lease
            leases = [self.runner.hold(job, self._abort)]
            try:
                self._claim_partners(worker, leases)
                for lease in leases:
                    with job_context(lease.job.id):
                        log.info("%s runs %s (attempt %d) in a batch of %d", worker, lease.job.id,
                                 lease.job.attempts, len(leases))
                self.runner.run_batch(leases, self._abort)
            except Exception:  # e.g. the database failed mid-job: the lease lapses and the job is retried
                with job_context(job.id):
                    log.exception("running %s failed", job.id)
            finally:
                for lease in leases:  # run_batch stopped them, unless something failed before it
                    lease.stop()

    def _claim_partners(self, worker: str, leases: list[Lease]) -> None:
        """Add compatible queued jobs to denoise with the first one, held as claimed, waiting up to
        batch_wait_seconds for enough of them."""
        job = leases[0].job
        if self.batch_size == 1 or not runs_batches(self.runner.generators[job.model]):
            return
        deadline = time.monotonic() + self.batch_wait_seconds
        while not self._stopping.is_set():
            try:
                claimed = self.store.claim_compatible(worker, job, self.batch_size - len(leases))
            except Exception:  # the database may come back; run what is claimed
                log.exception("claiming jobs to batch with %s failed", job.id)
                break
            leases += [self.runner.hold(partner, self._abort) for partner in claimed]
            left = deadline - time.monotonic()
            if len(leases) == self.batch_size or left <= 0:
                break
            self._wakeups.acquire(timeout=left)  # a job was queued, or the wait is over
