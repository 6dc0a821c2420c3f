"""Runs one claimed job to its outcome: generate, render, store, complete. Shared by every executor.

A worker never imports FastAPI; it talks to the API only through the job store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping

from reelgen.backends.base import GenerationCancelled, GenerationRequest, Generator
from reelgen.rendering import encode_video, spritesheet, thumbnail
from reelgen.service import usage
from reelgen.service.health import LOAD_FAILED, LOADED, NOT_LOADED
from reelgen.service.jobs import Job, JobStore
from reelgen.service.logs import job_context
from reelgen.service.metrics import ServiceMetrics
from reelgen.service.settings import ServiceSettings
from reelgen.service.storage import (
    ObjectStore,
    StorageUnavailable,
    attempt_prefix,
    attempts_prefix,
    input_key,
    output_key,
)

log = logging.getLogger(__name__)

# progress while denoising runs from 0 to this; rendering and storing fill the rest
_DENOISE_SHARE = 90
_RENDERED = 95


class JobRunner:
    def __init__(self, store: JobStore, storage: ObjectStore, generators: Mapping[str, Generator],
                 heartbeat_seconds: float, *, prices: usage.Prices | None = None,
                 metrics: ServiceMetrics | None = None):
        self.store = store
        self.storage = storage
        self.generators = generators
        self.heartbeat_seconds = heartbeat_seconds
        # by default the prices of REELGEN_* settings: what a worker process outside `reelgen serve` is given
        self.prices = prices or usage.Prices.from_settings(ServiceSettings())
        self.metrics = metrics or ServiceMetrics()
        # what /readyz reports per model: loaded here, not loaded yet, or its last load failed
        self.model_states = {model: NOT_LOADED for model in generators}
        # A generator runs one batch at a time; workers sharing it overlap rendering and storing instead.
        self._locks = {model: threading.Lock() for model in generators}

    def run(self, job: Job, abort: threading.Event) -> None:
        """Run a job this process holds the lease on. `abort` set (shutdown) -> stop within a step and re-queue."""
        with job_context(job.id), self.metrics.utilization.busy():
            self._run(job, abort)

    def _run(self, job: Job, abort: threading.Event) -> None:
        token = job.lease_token
        cancel = threading.Event()  # stops the denoising loop: lease lost, job cancelled or deleted, or abort
        timings = {"queue_wait": job.started_at - job.created_at}
        spent = {"compute_seconds": 0.0, "bytes_stored": 0}  # what this attempt used, for its usage record
        try:
            with _Heartbeat(self.store, job.id, token, self.heartbeat_seconds, cancel, abort):
                self._generate_and_store(job, token, cancel, abort, timings, spent)
            self._record_usage(job, token, spent)  # first: a completed video always shows its usage
            if self.store.complete(job.id, token, timings):
                self._remove_other_attempts(job.id, token)
                self.metrics.job_finished("completed", timings)
                log.info("completed %s in %.2fs", job.id, sum(timings.values()))
            else:
                self._discard(job.id, token)
        except GenerationCancelled:
            self._discard(job.id, token)
            spent["bytes_stored"] = 0
            # Only a shutdown gives the job back; a cancel, delete or lost lease already took it away.
            if abort.is_set() and self.store.release(job.id, token):
                log.info("re-queued %s on shutdown", job.id)
            elif self._record_usage(job, token, spent):  # the token still matches: cancelled, not re-claimed
                self.metrics.job_finished("cancelled", timings)
        # The job's new state first, then the cleanup: no heartbeat runs here, and with the store down the cleanup
        # can take longer than the lease
        except StorageUnavailable as e:
            # the video was made but could not be kept: another attempt may find the store back
            if job.attempts < self.store.max_attempts and self.store.requeue(job.id, token):
                log.warning("re-queued %s (attempt %d of %d): %s", job.id, job.attempts, self.store.max_attempts, e)
            else:
                self._fail(job, token, "storage_unavailable", str(e), timings, spent)
            self._discard(job.id, token)
        except Exception as e:
            log.exception("video %s failed", job.id)
            self._fail(job, token, "generation_failed", f"{type(e).__name__}: {e}", timings, spent)
            self._discard(job.id, token)

    def _fail(self, job: Job, token: int, code: str, message: str, timings: dict[str, float], spent: dict) -> None:
        spent["bytes_stored"] = 0
        self._record_usage(job, token, spent)
        if self.store.fail(job.id, token, code, message, timings):
            self.metrics.job_finished("failed", timings)

    def _discard(self, job_id: str, token: int) -> None:
        """Remove what an attempt stored; if the store is down, the files go when another attempt completes
        (_remove_other_attempts) or the job is deleted or expires."""
        try:
            self.storage.delete(attempt_prefix(job_id, token))
        except Exception:
            log.warning("could not remove the files of %s attempt %d", job_id, token, exc_info=True)

    def _record_usage(self, job: Job, token: int, spent: dict) -> bool:
        record = usage.job_usage(_device(self.generators.get(job.model)), spent["compute_seconds"],
                                 spent["bytes_stored"], self.store.retention_seconds / 3600, self.prices)
        return usage.record(self.store, job.id, token, record)

    def _load(self, model: str, generator: Generator) -> float:
        try:
            seconds = generator.load()
        except Exception:
            self.model_states[model] = LOAD_FAILED
            raise
        self.model_states[model] = LOADED
        return seconds

    def _generate_and_store(self, job: Job, token: int, cancel: threading.Event, abort: threading.Event,
                            timings: dict[str, float], spent: dict) -> None:
        generator = self.generators.get(job.model)
        if generator is None:
            raise LookupError(f"model {job.model!r} is not served by this worker")

        def on_step(done: int, total: int) -> None:
            if abort.is_set() or not _beat(self.store, job.id, token, done * _DENOISE_SHARE // total):
                cancel.set()

        width, height = (int(side) for side in job.size.split("x"))
        request = GenerationRequest(prompt=job.prompt, negative_prompt=job.negative_prompt, seed=job.seed,
                                    frames=job.frames, steps=job.steps, guidance_scale=job.guidance_scale,
                                    sampler=job.sampler, size=(width, height),
                                    image=self.storage.get(input_key(job.id)) if job.has_image else None)
        timings["model_load"] = self._load(job.model, generator)
        spent["compute_seconds"] += timings["model_load"]
        with self._locks[job.model]:
            clock = time.perf_counter()  # after the lock: waiting for another job is not this job's compute
            try:
                result = generator.generate([request], on_step=on_step, cancel=cancel)
            finally:
                spent["compute_seconds"] += time.perf_counter() - clock
        timings.update(result.timings)

        clock = time.perf_counter()
        frames = result.frames[0]  # (F, H, W, 3) at native size
        min_side = min(width, height)  # upscaled to `size` when the model generates smaller
        files = {
            "video": encode_video(frames, fmt=job.format, fps=job.fps, min_side=min_side),
            "thumbnail": thumbnail(frames, min_side=min_side),
            "spritesheet": spritesheet(frames),
        }
        timings["render"] = time.perf_counter() - clock
        _beat(self.store, job.id, token, _RENDERED)

        clock = time.perf_counter()
        for variant, data in files.items():  # each one read back and checked before complete() may run
            try:
                self.storage.put_retrying(output_key(job.id, token, variant, job.format), data, stop=cancel)
            except StorageUnavailable:
                if cancel.is_set():  # cancelled, deleted, lease lost or shutdown while waiting for the store
                    raise GenerationCancelled("stopped while storing") from None
                raise
            spent["bytes_stored"] += len(data)
        timings["store"] = time.perf_counter() - clock

    def _remove_other_attempts(self, job_id: str, token: int) -> None:
        """Files an earlier attempt left before it lost its lease (its worker died mid-upload)."""
        mine = attempt_prefix(job_id, token)
        for prefix in self.storage.children(attempts_prefix(job_id)):
            if prefix != mine:
                self.storage.delete(prefix)


class _Heartbeat:
    """Keeps the lease alive when no denoising step beats it (model loading, rendering, storing, a slow step),
    and passes a lost lease or a shutdown on to `cancel`."""

    def __init__(self, store: JobStore, job_id: str, token: int, interval: float, cancel: threading.Event,
                 abort: threading.Event):
        self.store, self.job_id, self.token, self.interval = store, job_id, token, interval
        self.cancel, self.abort = cancel, abort
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job_id}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()

    def _beat(self) -> None:
        with job_context(self.job_id):  # a new thread starts without the worker's context
            while not self._done.wait(self.interval):
                if self.abort.is_set() or not _beat(self.store, self.job_id, self.token):
                    self.cancel.set()
                    return


def _beat(store: JobStore, job_id: str, token: int, progress: int | None = None) -> bool:
    """Heartbeat; False only when the job is certainly no longer ours."""
    try:
        return store.heartbeat(job_id, token, progress)
    except Exception:  # a database hiccup: the next beat may pass, and fencing covers the worst case
        log.warning("heartbeat for %s failed", job_id, exc_info=True)
        return True


def _device(generator: Generator | None) -> str:
    # diffusers backends name their device in their config; the built-in model runs on the CPU
    return getattr(getattr(generator, "config", None), "device", "cpu")
