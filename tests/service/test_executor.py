"""Workers: running jobs to the end, progress per step, cancel within a step, shutdown, fencing, housekeeping."""

from __future__ import annotations

import threading

import pytest

from reelgen.rendering import read_video
from reelgen.service.executors import JobRunner, LocalExecutor
from reelgen.service.housekeeping import Housekeeper
from reelgen.service.jobs import JobStatus, JobStore
from reelgen.service.storage import attempt_prefix, attempts_prefix, job_prefix, output_key
from tests.service.helpers import FakeGenerator, new_job, wait_until


@pytest.fixture
def real_time_store(tmp_path):
    """A store on the wall clock, with leases short enough to lapse within a test."""
    store = JobStore(f"sqlite:///{tmp_path / 'jobs.db'}", lease_seconds=0.6, max_attempts=3, retention_seconds=100)
    store.create_schema()
    yield store
    store.close()


def _run(store, storage, generator, job, abort=None):
    JobRunner(store, storage, {"fake": generator}, heartbeat_seconds=0.2).run(job, abort or threading.Event())


def test_a_job_runs_to_completion_with_files_timings_and_stepwise_progress(store, storage):
    job = store.add(new_job(steps=6, size="512x512"))
    seen = []
    generator = FakeGenerator()
    original = store.heartbeat

    def recording_heartbeat(job_id, token, progress=None):
        alive = original(job_id, token, progress)
        seen.append(store.get(job_id).progress)
        return alive

    store.heartbeat = recording_heartbeat
    _run(store, storage, generator, store.claim("w"))
    done = store.get(job.id)
    assert done.status == JobStatus.COMPLETED and done.progress == 100 and done.output_token == 1
    assert seen == sorted(seen) and len(set(seen)) >= 6  # moved with every step, never backwards
    assert {"queue_wait", "model_load", "encode_text", "denoise", "decode", "render", "store"} <= set(done.timings)
    frames, fps = read_video(storage.get(output_key(job.id, 1, "video", "mp4")))
    assert frames.shape == (8, 512, 512, 3) and fps == 8
    assert storage.get(output_key(job.id, 1, "thumbnail", "mp4"))[:2] == b"\xff\xd8"  # JPEG
    assert storage.info(output_key(job.id, 1, "spritesheet", "mp4")).size > 0


def test_a_failing_generation_records_the_error_and_leaves_no_files(store, storage):
    job = store.add(new_job())
    _run(store, storage, FakeGenerator(fail=RuntimeError("out of memory")), store.claim("w"))
    failed = store.get(job.id)
    assert failed.status == JobStatus.FAILED and failed.error_code == "generation_failed"
    assert failed.error_message == "RuntimeError: out of memory"
    assert storage.children(attempts_prefix(job.id)) == []


def test_a_stale_worker_cannot_complete_and_a_retry_leaves_one_output(store, storage, clock):
    job = store.add(new_job())
    stale = store.claim("w1")
    clock.now += store.lease_seconds + 1
    store.recover_expired_leases()
    retry = store.claim("w2")
    # an earlier attempt died mid-upload and left a file behind
    storage.put(output_key(job.id, stale.lease_token, "video", "mp4"), b"half")
    _run(store, storage, FakeGenerator(), stale)  # fenced off at its first step
    assert store.get(job.id).status == JobStatus.IN_PROGRESS
    _run(store, storage, FakeGenerator(), retry)
    assert store.get(job.id).output_token == retry.lease_token
    assert storage.children(attempts_prefix(job.id)) == [attempt_prefix(job.id, retry.lease_token)]


def test_heartbeats_keep_the_lease_through_a_long_model_load(real_time_store, storage):
    job = real_time_store.add(new_job())
    generator = FakeGenerator(load_seconds=1.5)  # over twice the lease, with no denoising step to beat it
    thread = threading.Thread(target=_run, args=(real_time_store, storage, generator, real_time_store.claim("w")))
    thread.start()
    while thread.is_alive():
        assert real_time_store.recover_expired_leases() == (0, 0)
        thread.join(0.1)
    assert real_time_store.get(job.id).status == JobStatus.COMPLETED


@pytest.fixture
def executor(real_time_store, storage):
    generator = FakeGenerator(step_seconds=0.01)
    runner = JobRunner(real_time_store, storage, {"fake": generator}, heartbeat_seconds=0.2)
    executor = LocalExecutor(real_time_store, runner, workers=2, poll_seconds=0.05)
    executor.generator = generator
    executor.start()
    yield executor
    executor.stop(grace_seconds=0)


def test_workers_run_queued_jobs(executor, real_time_store):
    ids = [real_time_store.add(new_job()).id for _ in range(3)]
    executor.wake()
    wait_until(lambda: all(real_time_store.get(i).status == JobStatus.COMPLETED for i in ids), message="3 jobs")


def test_cancel_stops_the_denoising_loop_within_one_step(executor, real_time_store, storage):
    job = real_time_store.add(new_job(steps=10_000))
    wait_until(lambda: real_time_store.get(job.id).progress > 0, message="denoising to start")
    real_time_store.cancel(job.id)
    steps_at_cancel = executor.generator.steps_run
    wait_until(executor.generator.cancelled.is_set, timeout=10, message="the generator to stop")
    assert executor.generator.steps_run <= steps_at_cancel + 1
    assert real_time_store.get(job.id).status == JobStatus.CANCELLED
    assert storage.children(attempts_prefix(job.id)) == []


def test_shutdown_requeues_a_running_job_without_spending_an_attempt(real_time_store, storage):
    runner = JobRunner(real_time_store, storage, {"fake": FakeGenerator(step_seconds=0.01)}, heartbeat_seconds=0.2)
    executor = LocalExecutor(real_time_store, runner, workers=1, poll_seconds=0.05)
    executor.start()
    job = real_time_store.add(new_job(steps=10_000))
    wait_until(lambda: real_time_store.get(job.id).progress > 0, message="denoising to start")
    executor.stop(grace_seconds=0.1)
    requeued = real_time_store.get(job.id)
    assert (requeued.status, requeued.attempts, requeued.progress) == (JobStatus.QUEUED, 0, 0)
    assert real_time_store.claim("next") is not None  # nothing of the old process holds it


def test_shutdown_lets_a_short_job_finish(real_time_store, storage):
    runner = JobRunner(real_time_store, storage, {"fake": FakeGenerator(step_seconds=0.01)}, heartbeat_seconds=0.2)
    executor = LocalExecutor(real_time_store, runner, workers=1, poll_seconds=0.05)
    executor.start()
    job = real_time_store.add(new_job(steps=50))
    wait_until(lambda: real_time_store.get(job.id).progress > 0, message="denoising to start")
    executor.stop(grace_seconds=30)
    assert real_time_store.get(job.id).status == JobStatus.COMPLETED


def test_housekeeping_recovers_dead_workers_jobs_and_sweeps_expired_files(store, storage, clock):
    woken = []

    class Executor:
        def wake(self):
            woken.append(True)

    keeper = Housekeeper(store, storage, Executor(), interval_seconds=60)
    orphan = store.add(new_job())
    store.claim("a process that was SIGKILLed")
    finished = store.add(new_job())
    claim = store.claim("w")
    storage.put(output_key(finished.id, claim.lease_token, "video", "mp4"), b"video")
    store.complete(finished.id, claim.lease_token, {})
    clock.now += store.lease_seconds + 1
    keeper.run_once()
    assert store.get(orphan.id).status == JobStatus.QUEUED and woken
    assert storage.children(job_prefix(finished.id))  # retention not over yet
    clock.now += store.retention_seconds
    keeper.run_once()
    assert storage.children(job_prefix(finished.id)) == [] and store.get(finished.id).files_deleted
