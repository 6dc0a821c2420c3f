"""Batching: compatible queued jobs denoise together, each with its own progress, cancel, output and failures."""

from __future__ import annotations

import threading
from collections import Counter

import numpy as np
import pytest

from reelgen.backends.base import BatchResult
from reelgen.backends.builtin import BuiltinGenerator
from reelgen.rendering import read_video
from reelgen.service.executors import JobRunner, LocalExecutor
from reelgen.service.jobs import JobStatus, JobStore
from reelgen.service.jobs.store import BATCH_KEY
from reelgen.service.storage import ObjectStore, attempts_prefix, output_key
from tests.service.helpers import FakeGenerator, new_job, wait_until


@pytest.fixture
def wall_store(tmp_path):
    """A store on the wall clock (heartbeats and leases run for real)."""
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}", lease_seconds=5, max_attempts=2, retention_seconds=100)
    store.create_schema()
    yield store
    store.close()


def _job(generator, **overrides):
    return new_job(**({"model": generator.spec.id, "frames": 8, "steps": 3, "sampler": "dpm++"} | overrides))


def _run_all(store, storage, generator, jobs, *, batch_size=4, workers=1):
    """Queue `jobs`, then start an executor and wait until every one has finished -> their records."""
    ids = [store.add(job).id for job in jobs]
    runner = JobRunner(store, storage, {generator.spec.id: generator}, heartbeat_seconds=0.2)
    executor = LocalExecutor(store, runner, workers=workers, poll_seconds=0.05, batch_size=batch_size)
    executor.start()
    try:
        wait_until(lambda: all(store.get(i).completed_at for i in ids), message="every job to finish")
    finally:
        executor.stop(grace_seconds=0)
    return [store.get(i) for i in ids], runner


class _BatchingFake(FakeGenerator):
    """A FakeGenerator that runs batches, and whose load waits until `loaded` is set."""

    def __init__(self):
        super().__init__()
        self.loading, self.loaded = threading.Event(), threading.Event()

    def load(self) -> float:
        self.loading.set()
        self.loaded.wait()
        return 0.0

    def generate_each(self, requests, *, on_steps, cancels) -> BatchResult:
        results = [self.generate([r], on_step=s, cancel=c) for r, s, c in zip(requests, on_steps, cancels)]
        return BatchResult(videos=[r.frames[0] for r in results], timings=results[0].timings)


def _outlive_a_lease(store, clock, ids):
    """Let a lease's length pass on the store's clock; each job must be heartbeated after that, and so the
    housekeeping sweep must find none of them expired."""
    clock.now += store.lease_seconds + 1
    # a beat before the jump left lease_expires_at below clock.now: only a beat after it passes
    wait_until(lambda: all(store.get(i).lease_expires_at > clock.now for i in ids), timeout=10,
               message=f"a heartbeat of each of {len(ids)} held jobs")
    assert store.recover_expired_leases() == (0, 0)


def test_jobs_held_while_the_worker_waits_for_partners_keep_their_leases(store, clock, storage):
    generator = _BatchingFake()
    generator.loaded.set()
    held = [store.add(new_job(seed=s)).id for s in range(2)]
    runner = JobRunner(store, storage, {"fake": generator}, heartbeat_seconds=0.05)
    executor = LocalExecutor(store, runner, poll_seconds=0.05, batch_size=3, batch_wait_seconds=600)
    executor.start()
    try:
        wait_until(lambda: all(store.get(i).status == JobStatus.IN_PROGRESS for i in held), message="2 claims")
        _outlive_a_lease(store, clock, held)  # the worker waits for a third compatible job meanwhile
        last = store.add(new_job(seed=2)).id
        executor.wake()
        wait_until(lambda: all(store.get(i).completed_at for i in [*held, last]), message="the batch to finish")
    finally:
        executor.stop(grace_seconds=0)
    done = [store.get(i) for i in [*held, last]]
    assert [(j.status, j.attempts, j.usage["batch_size"]) for j in done] == [(JobStatus.COMPLETED, 1, 3)] * 3


def test_every_job_of_a_batch_keeps_its_lease_while_the_model_loads(store, clock, storage):
    generator = _BatchingFake()
    ids = [store.add(new_job(seed=s)).id for s in range(3)]
    runner = JobRunner(store, storage, {"fake": generator}, heartbeat_seconds=0.05)
    executor = LocalExecutor(store, runner, poll_seconds=0.05, batch_size=3)
    executor.start()
    try:
        wait_until(generator.loading.is_set, message="the model load to start")
        _outlive_a_lease(store, clock, ids)
        generator.loaded.set()
        wait_until(lambda: all(store.get(i).completed_at for i in ids), message="the batch to finish")
    finally:
        executor.stop(grace_seconds=0)
    done = [store.get(i) for i in ids]
    assert [(j.status, j.attempts, j.usage["batch_size"]) for j in done] == [(JobStatus.COMPLETED, 1, 3)] * 3


def _video(storage, job):
    return read_video(storage.get(output_key(job.id, job.output_token, "video", job.format)))[0]


def test_eight_compatible_jobs_run_in_two_batches_of_four_each_with_its_own_video(wall_store, storage,
                                                                                  tiny_generator):
    specs = [dict(seed=s, prompt=f"a {c} ball moving left", guidance_scale=g)
             for s, (c, g) in enumerate(zip(["red", "green", "blue", "white"] * 2, [5.0, 3.0] * 4))]
    batched, runner = _run_all(wall_store, storage, tiny_generator, [_job(tiny_generator, **s) for s in specs])
    assert all(j.status == JobStatus.COMPLETED for j in batched)
    assert [j.usage["batch_size"] for j in batched] == [4] * 8
    assert runner.metrics.registry.get_sample_value("reelgen_batch_size_count") == 2  # two batched generations
    # each job's share of its batch's compute, and the batch's stages in its timings
    assert all(j.usage["compute_seconds"] > 0 for j in batched)
    assert all({"encode_text", "denoise", "decode", "render", "store"} <= set(j.timings) for j in batched)

    alone, _ = _run_all(wall_store, storage, tiny_generator, [_job(tiny_generator, **s) for s in specs],
                        batch_size=1)
    assert [j.usage["batch_size"] for j in alone] == [1] * 8
    for b, a in zip(batched, alone):  # the same video as alone, within a grey level before encoding
        assert np.abs(_video(storage, b).astype(int) - _video(storage, a).astype(int)).mean() < 1
    assert len({_video(storage, j).tobytes() for j in batched}) == 8  # seeds and prompts reached their videos


def test_incompatible_jobs_are_not_batched_together(wall_store, storage, tiny_generator):
    jobs = [_job(tiny_generator), _job(tiny_generator, steps=2), _job(tiny_generator, frames=6),
            _job(tiny_generator, sampler="ddim"), _job(tiny_generator, size="512x512"),
            _job(tiny_generator, seed=9, fps=4, format="gif")]  # fps and format differ only when rendering
    done, _ = _run_all(wall_store, storage, tiny_generator, jobs)
    assert all(j.status == JobStatus.COMPLETED for j in done)
    assert [j.usage["batch_size"] for j in done] == [2, 1, 1, 1, 1, 2]


def test_claim_compatible_takes_only_jobs_of_the_same_key(store):
    first = store.add(new_job())
    others = {column: store.add(new_job(**{column: value})).id for column, value in
              zip(BATCH_KEY, ["other", "512x512", 6, 8, "dpm++"])}
    image = store.add(new_job(has_image=True))
    twins = [store.add(new_job(seed=s, prompt=f"prompt {s}")).id for s in range(3)]
    leader = store.claim("w")
    assert leader.id == first.id
    assert [j.id for j in store.claim_compatible("w", leader, 2)] == twins[:2]
    assert [j.id for j in store.claim_compatible("w", leader, 5)] == twins[2:]
    assert store.claim_compatible("w", leader, 5) == []
    assert {store.get(i).status for i in [*others.values(), image.id]} == {JobStatus.QUEUED}


def test_each_job_is_claimed_exactly_once_by_racing_batch_claims(database_url):
    """SQLite and PostgreSQL (FOR UPDATE SKIP LOCKED): workers claiming batches never share a job."""
    store = JobStore(database_url, lease_seconds=30)
    store.create_schema()
    ids = {store.add(new_job(seed=i, steps=2 + i % 2)).id for i in range(40)}
    claimed: list[tuple[str, ...]] = []

    def worker(name: str) -> None:
        while (job := store.claim(name)) is not None:
            batch = [job, *store.claim_compatible(name, job, 3)]
            assert len({tuple(getattr(j, c) for c in BATCH_KEY) for j in batch}) == 1
            claimed.append(tuple(j.id for j in batch))

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    store.close()
    counts = Counter(i for batch in claimed for i in batch)
    assert set(counts) == ids and set(counts.values()) == {1}
    assert max(len(batch) for batch in claimed) == 4


def test_progress_moves_per_job_with_every_step(wall_store, storage, tiny_generator):
    seen: dict[str, list[int]] = {}
    original = wall_store.heartbeat

    def recording_heartbeat(job_id, token, progress=None):
        if progress is not None:
            seen.setdefault(job_id, []).append(progress)
        return original(job_id, token, progress)

    wall_store.heartbeat = recording_heartbeat
    done, _ = _run_all(wall_store, storage, tiny_generator, [_job(tiny_generator, steps=6, seed=s) for s in range(3)])
    assert [j.usage["batch_size"] for j in done] == [3] * 3
    for job in done:
        denoising = [p for p in seen[job.id] if p <= 90]
        assert denoising == [15, 30, 45, 60, 75, 90]  # one beat per step, 90% spread over 6 steps


def test_cancelling_one_job_of_a_batch_stops_only_it(wall_store, storage, slow_model_dir):
    generator = BuiltinGenerator(slow_model_dir)
    jobs = [wall_store.add(_job(generator, steps=150, seed=s)) for s in range(3)]
    runner = JobRunner(wall_store, storage, {generator.spec.id: generator}, heartbeat_seconds=0.2)
    executor = LocalExecutor(wall_store, runner, poll_seconds=0.05, batch_size=4)
    executor.start()
    try:
        wait_until(lambda: all(wall_store.get(j.id).progress > 0 for j in jobs), message="denoising to start")
        wall_store.cancel(jobs[1].id)
        wait_until(lambda: all(wall_store.get(j.id).completed_at for j in jobs), message="the jobs to finish")
    finally:
        executor.stop(grace_seconds=0)
    done = [wall_store.get(j.id) for j in jobs]
    assert [j.status for j in done] == [JobStatus.COMPLETED, JobStatus.CANCELLED, JobStatus.COMPLETED]
    assert storage.children(attempts_prefix(jobs[1].id)) == []
    assert [j.usage["batch_size"] for j in done] == [3] * 3
    # the cancelled job left early, so it is charged fewer of the batch's step-seconds than the others
    assert done[1].usage["compute_seconds"] < min(done[0].usage["compute_seconds"], done[2].usage["compute_seconds"])


class _FailingFor(ObjectStore):
    """An object store that cannot keep one job's files."""

    def __init__(self, url: str, job_id: str):
        super().__init__(url)
        self.job_id = job_id

    def put(self, key: str, data: bytes) -> None:
        if self.job_id in key:
            raise OSError("disk full")
        super().put(key, data)


def test_a_storage_failure_fails_only_its_own_job(wall_store, tmp_path, tiny_generator):
    jobs = [_job(tiny_generator, seed=s) for s in range(3)]
    jobs[1].id = "video_unlucky"
    storage = _FailingFor(str(tmp_path / "files"), "video_unlucky")
    done, _ = _run_all(wall_store, storage, tiny_generator, jobs)
    assert [j.status for j in done] == [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.COMPLETED]
    assert done[0].usage["batch_size"] == 3


def test_a_generator_without_batches_runs_jobs_one_at_a_time(wall_store, storage):
    generator = FakeGenerator()
    done, _ = _run_all(wall_store, storage, generator, [new_job(seed=s) for s in range(3)])
    assert [j.usage["batch_size"] for j in done] == [1] * 3
    assert len(generator.requests) == 3
