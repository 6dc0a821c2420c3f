"""Runs claimed jobs to their outcomes: generate, render, store, complete. Shared by every executor.

Jobs claimed together (JobStore.claim_compatible) run as one batch: each job's lease is heartbeated from its
claim (JobRunner.hold), each job has its own thread to its outcome (progress, cancel, rendering, storing, usage,
failures), and the threads meet once, to denoise as one batched pass of a generator that runs batches
(backends.base.runs_batches).

A worker never imports FastAPI; it talks to the API only through the job store.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from reelgen.backends.base import GenerationCancelled, GenerationRequest, Generator, runs_batches
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

    def hold(self, job: Job, abort: threading.Event) -> Lease:
        """Start heartbeating a job this process just claimed; call it at once, before anything slow."""
        return Lease(self.store, job, self.heartbeat_seconds, abort)

    def run(self, job: Job, abort: threading.Event) -> None:
        """Run a job this process holds the lease on. `abort` set (shutdown) -> stop within a step and re-queue."""
        self.run_batch([self.hold(job, abort)], abort)

    def run_batch(self, leases: list[Lease], abort: threading.Event) -> None:
        """Run jobs this process holds (`hold`), which one generator can denoise together (same model, size, frames,
        steps and sampler; several only for a generator that runs batches), each to its own outcome. Every lease
        given is stopped by the time this returns."""
        try:
            model = leases[0].job.model
            if len(leases) > 1 and not runs_batches(self.generators.get(model)):
                raise ValueError(f"model {model!r} runs one job at a time")
            batch = _Batch(len(leases), self._denoise)
            with self.metrics.utilization.busy():  # one worker, however many jobs it runs together
                if len(leases) == 1:
                    self._run_member(leases[0], abort, batch)
                    return
                threads = [threading.Thread(target=self._run_member, args=(lease, abort, batch),
                                            name=f"reelgen-{lease.job.id}") for lease in leases]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join()
        finally:
            for lease in leases:
                lease.stop()

    def _run_member(self, lease: Lease, abort: threading.Event, batch: _Batch) -> None:
        with job_context(lease.job.id):
            try:
                self._run(lease, abort, batch)
            except Exception:  # e.g. the database failed mid-job: the lease lapses and the job is retried
                if len(batch) == 1:
                    raise  # the executor logs it, as for any job
                log.exception("running %s failed", lease.job.id)

    def _run(self, lease: Lease, abort: threading.Event, batch: _Batch) -> None:
        job, token = lease.job, lease.job.lease_token
        cancel = lease.cancel  # stops the denoising loop: lease lost, job cancelled or deleted, or abort
        timings = {"queue_wait": job.started_at - job.created_at}
        # what this attempt used, for its usage record
        spent = {"compute_seconds": 0.0, "bytes_stored": 0, "batch_size": len(batch)}
        try:
            try:
                self._generate_and_store(job, token, cancel, abort, timings, spent, batch)
            finally:
                lease.stop()
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
                                 spent["bytes_stored"], self.store.retention_seconds / 3600, self.prices,
                                 batch_size=spent["batch_size"])
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
                            timings: dict[str, float], spent: dict, batch: _Batch) -> None:
        def on_step(done: int, total: int) -> None:
            if abort.is_set() or not _beat(self.store, job.id, token, done * _DENOISE_SHARE // total):
                cancel.set()

        width, height = (int(side) for side in job.size.split("x"))
        try:
            generator = self.generators.get(job.model)
            if generator is None:
                raise LookupError(f"model {job.model!r} is not served by this worker")
            request = GenerationRequest(prompt=job.prompt, negative_prompt=job.negative_prompt, seed=job.seed,
                                        frames=job.frames, steps=job.steps, guidance_scale=job.guidance_scale,
                                        sampler=job.sampler, size=(width, height),
                                        image=self.storage.get(input_key(job.id)) if job.has_image else None)
            timings["model_load"] = self._load(job.model, generator)
            spent["compute_seconds"] += timings["model_load"]
        except BaseException:
            batch.withdraw()  # the others need not wait for this job
            raise
        member = batch.generate(job.model, generator, _Member(request, on_step, cancel))
        spent["compute_seconds"] += member.compute_seconds
        if member.error is not None:
            raise member.error
        timings.update(member.timings)
        if member.video is None:
            raise GenerationCancelled("left the batch when cancelled")

        clock = time.perf_counter()
        frames = member.video  # (F, H, W, 3) at native size
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

    def _denoise(self, model: str, generator: Generator, members: list[_Member]) -> None:
        """One generation for every member; compute seconds are split in proportion to the denoising steps each
        took part in (equal shares unless a cancelled member left early), so a batch costs what it took."""
        with self._locks[model]:
            clock = time.perf_counter()  # after the lock: waiting for another batch is not this one's compute
            try:
                if len(members) == 1:
                    (member,) = members
                    result = generator.generate([member.request], on_step=member.on_step, cancel=member.cancel)
                    videos, timings = [result.frames[0]], result.timings
                else:
                    result = generator.generate_each([m.request for m in members],
                                                     on_steps=[m.on_step for m in members],
                                                     cancels=[m.cancel for m in members])
                    videos, timings = result.videos, result.timings
                    self.metrics.batch_size.observe(len(members))
            finally:
                seconds = time.perf_counter() - clock
                steps = sum(m.steps for m in members)
                for m in members:
                    m.compute_seconds = seconds * m.steps / steps if steps else seconds / len(members)
        for member, video in zip(members, videos):
            member.video, member.timings = video, timings

    def _remove_other_attempts(self, job_id: str, token: int) -> None:
        """Files an earlier attempt left before it lost its lease (its worker died mid-upload)."""
        mine = attempt_prefix(job_id, token)
        for prefix in self.storage.children(attempts_prefix(job_id)):
            if prefix != mine:
                self.storage.delete(prefix)


@dataclass
class _Member:
    """One job's part in a generation: its request and controls in, its video and share of the work out."""

    request: GenerationRequest
    report: Callable[[int, int], None]  # the job's progress callback
    cancel: threading.Event
    steps: int = 0  # denoising steps this job took part in
    video: np.ndarray | None = None  # (F, H, W, 3) at native size; None: cancelled
    timings: dict[str, float] = field(default_factory=dict)  # the generation's stages
    compute_seconds: float = 0.0
    error: BaseException | None = None  # the generation failed for every member

    def on_step(self, done: int, total: int) -> None:
        self.steps = done
        self.report(done, total)


class _Batch:
    """Where jobs claimed together meet: each job's thread hands in its request (or withdraws, having failed
    before), the first to arrive waits for the others and runs one generation for all, and each takes back
    its own video. A batch of one is a job run alone."""

    def __init__(self, size: int, run: Callable[[str, Generator, list[_Member]], None]):
        self.size, self._run = size, run
        self._expected = size  # jobs yet to arrive or withdraw
        self._members: list[_Member] = []
        self._arrived = threading.Condition()
        self._done = threading.Event()

    def __len__(self) -> int:
        return self.size

    def withdraw(self) -> None:
        with self._arrived:
            self._expected -= 1
            self._arrived.notify_all()

    def generate(self, model: str, generator: Generator, member: _Member) -> _Member:
        with self._arrived:
            self._members.append(member)
            self._expected -= 1
            self._arrived.notify_all()
            leader = len(self._members) == 1
            if leader:
                self._arrived.wait_for(lambda: self._expected == 0)
        if not leader:
            self._done.wait()
            return member
        try:
            self._run(model, generator, self._members)
        except BaseException as e:  # GenerationCancelled of a job alone, or a failure every member shares
            for m in self._members:
                m.error = e
        finally:
            self._done.set()
        return member


class Lease:
    """A claimed job's lease, heartbeated from right after the claim until `stop`.

    From the claim, not from the start of the job's run: a worker holds a job before that, while it claims or
    waits for the rest of its batch (batch_wait_ms) and starts the batch's threads, and a lease whose beats
    waited for the run lapsed there whenever that outlasted it (a stalled process, a long batch wait), so the
    job ran twice. It also beats where no denoising step does (model loading, the batch barrier, rendering,
    storing, a slow step), and passes a lost lease or a shutdown on to `cancel`."""

    def __init__(self, store: JobStore, job: Job, interval: float, abort: threading.Event):
        self.store, self.job, self.interval, self.abort = store, job, interval, abort
        self.cancel = threading.Event()  # set once the job is no longer this worker's to run, or on shutdown
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"heartbeat-{job.id}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """No more beats; safe to call again."""
        self._done.set()
        self._thread.join()

    def _beat(self) -> None:
        with job_context(self.job.id):  # a new thread starts without the worker's context
            while not self._done.wait(self.interval):
                if self.abort.is_set() or not _beat(self.store, self.job.id, self.job.lease_token):
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
