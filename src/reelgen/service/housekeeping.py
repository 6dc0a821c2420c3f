"""Periodic chores of the service: recover jobs of dead workers, sweep files past their retention, and drop
ended rate-limit windows and expired Idempotency-Key records."""

from __future__ import annotations

import logging
import threading

from reelgen.service.executors import Executor
from reelgen.service.jobs import JobStore
from reelgen.service.storage import ObjectStore, job_prefix
from reelgen.service.tenants import sweep as sweep_tenants

log = logging.getLogger(__name__)


class Housekeeper:
    def __init__(self, store: JobStore, storage: ObjectStore, executor: Executor, interval_seconds: float, *,
                 sweep_files: bool = True):
        self.store, self.storage, self.executor = store, storage, executor
        self.interval = interval_seconds
        # `reelgen worker` processes only recover leases: the API process sweeps, so one process per layout does
        self.sweep_files = sweep_files
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="reelgen-housekeeping", daemon=True)

    def run_once(self) -> None:
        requeued, failed = self.store.recover_expired_leases()
        if requeued or failed:
            log.warning("expired leases: %d job(s) re-queued, %d failed after too many attempts", requeued, failed)
        if requeued:
            self.executor.wake()
        if not self.sweep_files:
            return
        sweep_tenants(self.store.engine, self.store.clock())
        for job in self.store.expired():
            self.storage.delete(job_prefix(job.id))
            self.store.mark_files_deleted(job.id)
            log.info("retention: deleted the files of %s", job.id)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except Exception:  # one failed sweep must not end all later ones
                log.exception("housekeeping failed")
