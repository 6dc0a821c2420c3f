"""`reelgen worker` processes beside `reelgen serve --workers 0`, sharing one SQLite database and files folder.

The live tests start real processes on loopback (each imports torch and loads the text encoder): marked `slow`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from reelgen.cli import main
from reelgen.service.housekeeping import Housekeeper
from reelgen.service.jobs import JobStatus, JobStore
from reelgen.service.storage import output_key
from reelgen.service.webhooks import Outbox
from reelgen.service.worker import Worker
from tests.service.helpers import FakeGenerator, new_job, wait_until
from tests.service.live import Server, WorkerProcess, free_port
from tests.service.test_webhooks import SECRET, Receiver, verified

FAST = {"num_inference_steps": 2}
LONG = {"num_inference_steps": 200}  # seconds long on the slow model: time to act on a job mid-run


# --- which process does what ---

def test_a_worker_recovers_leases_and_leaves_the_retention_sweep_to_the_api_process(make_settings):
    worker = Worker(make_settings(lease_seconds=0.05, retention_hours=1e-6), generators=[FakeGenerator()])
    store, storage = worker.store, worker.executor.runner.storage
    store.create_schema()
    finished, running = store.add(new_job()), store.add(new_job())
    token = store.claim("worker-a", models=["fake"]).lease_token
    storage.put(output_key(finished.id, token, "video", "mp4"), b"video")
    assert store.complete(finished.id, token, {})
    store.claim("worker-b", models=["fake"])  # `running`, whose worker dies: its lease is never renewed
    wait_until(lambda: not store.get(running.id).lease_expires_at > time.time() and store.expired(),
               message="the lease and the retention to run out")

    worker.housekeeper.run_once()
    assert store.get(running.id).status == JobStatus.QUEUED
    assert storage.children(f"videos/{finished.id}/attempts") and not store.get(finished.id).files_deleted

    Housekeeper(store, storage, worker.executor, 60).run_once()  # as the API process's housekeeper does
    assert not storage.children(f"videos/{finished.id}/attempts") and store.get(finished.id).files_deleted
    store.close()


# --- bad flags ---

@pytest.mark.parametrize(("args", "message"), [
    (["--workers", "0"], "a reelgen worker needs at least one worker thread"),
    (["--executor", "ray"], "executor must be local"),
    (["--lease-seconds", "0"], "--lease-seconds (or REELGEN_LEASE_SECONDS): Input should be greater than 0"),
    (["--metrics-port", "70000"], "--metrics-port must be between 0 and 65535"),
    (["--poll-seconds", "soon"], "argument --poll-seconds: invalid float value: 'soon'"),
])
def test_bad_flags_exit_2_with_one_message_and_create_nothing(tmp_path, capsys, args, message):
    data = tmp_path / "data"
    try:
        status = main(["worker", "--data-dir", str(data), *args])
    except SystemExit as e:  # argparse's own errors
        status = e.code
    errors = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert status == 2 and len(errors) == 1 and message in errors[0], errors
    assert not data.exists()


@pytest.mark.slow
def test_a_real_worker_process_exits_2_on_a_bad_value(tmp_path):
    done = subprocess.run([sys.executable, "-m", "reelgen.cli", "worker", "--data-dir", str(tmp_path / "data"),
                           "--max-attempts", "0"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr.splitlines() == ["reelgen worker: error: --max-attempts (or REELGEN_MAX_ATTEMPTS): Input "
                                        "should be greater than or equal to 1, got 0"]


# --- what each process imports ---

def _run_python(code: str, cwd: Path) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip()


@pytest.mark.slow
def test_the_api_process_without_workers_imports_no_torch(tmp_path, tiny_model_dir):
    out = _run_python(f"""
        import sys
        from fastapi.testclient import TestClient
        from reelgen.service.app import create_app
        from reelgen.service.settings import ServiceSettings

        app = create_app(ServiceSettings(workers=0, data_dir="data", model_dir={str(tiny_model_dir)!r}))
        with TestClient(app) as client:
            models = [m["id"] for m in client.get("/v1/models").json()["data"]]
            created = client.post("/v1/videos", json={{"prompt": "a red circle"}}).json()["status"]
        print(models, created, "torch" in sys.modules)
    """, tmp_path)
    assert out == "['reelgen-shapes'] queued False"


@pytest.mark.slow
def test_the_worker_command_imports_no_fastapi_and_exits_0_on_sigterm(tmp_path, tiny_model_dir):
    port = free_port()
    out = _run_python(f"""
        import os, signal, sys, threading, urllib.request
        from reelgen.cli import main

        def stop_once_up():  # SIGTERM as soon as the worker serves its metrics
            while True:
                try:
                    urllib.request.urlopen("http://127.0.0.1:{port}/metrics", timeout=1)
                    break
                except OSError:
                    threading.Event().wait(0.1)
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=stop_once_up, daemon=True).start()
        status = main(["worker", "--data-dir", "data", "--model-dir", {str(tiny_model_dir)!r},
                       "--metrics-port", "{port}"])
        print(status, "fastapi" in sys.modules, "torch" in sys.modules)
    """, tmp_path)
    assert out == "0 False True"  # the worker holds the models; the API's framework stays out


# --- the live layout ---

@pytest.fixture
def receiver():
    receiver = Receiver()
    yield receiver
    receiver.close()


@pytest.fixture
def layout(tmp_path, slow_model_dir, monkeypatch):
    """`serve --workers 0` on loopback (webhooks to 127.0.0.1 allowed) and a way to start workers beside it."""
    for name, value in {"WEBHOOK_SECRET": SECRET, "WEBHOOK_ALLOW_HOSTS": "127.0.0.1/32",
                        "WEBHOOK_POLL_SECONDS": "0.1"}.items():
        monkeypatch.setenv(f"REELGEN_{name}", value)  # the processes inherit the environment
    server = Server(tmp_path, slow_model_dir, extra_args=("--workers", "0"))
    workers: list[WorkerProcess] = []

    def start_worker(name: str, *extra_args: str) -> WorkerProcess:
        workers.append(WorkerProcess(server, name, extra_args))
        return workers[-1].start()

    try:
        yield server.start(), start_worker
    finally:
        for worker in workers:
            worker.stop()
        server.stop()


def _video(http: httpx.Client, video_id: str) -> dict:
    return http.get(f"/v1/videos/{video_id}").json()


def _until(http: httpx.Client, video_id: str, condition, message: str) -> dict:
    return wait_until(lambda: (v := _video(http, video_id)) and condition(v) and v, timeout=240, interval=0.1,
                      message=f"{video_id}: {message}")


def _job(server: Server, video_id: str):
    store = JobStore(f"sqlite:///{server.root / 'data' / 'jobs.db'}")
    try:
        return store.get(video_id)
    finally:
        store.close()


def _deliveries(server: Server, video_id: str) -> list:
    store = JobStore(f"sqlite:///{server.root / 'data' / 'jobs.db'}")
    try:
        return Outbox(store.engine).for_job(video_id)
    finally:
        store.close()


@pytest.mark.slow
def test_jobs_complete_through_the_api_and_a_killed_workers_job_is_finished_by_the_other(layout, receiver):
    server, start_worker = layout
    workers = [start_worker("worker-a"), start_worker("worker-b")]
    http = server.http()
    assert "libtorch" not in Path(f"/proc/{server.proc.pid}/maps").read_text()

    quick = [http.post("/v1/videos", json={"prompt": f"a red circle {i}", "webhook_url": receiver.url("/quick"),
                                           **FAST}).json()["id"] for i in range(3)]
    for video_id in quick:
        assert _until(http, video_id, lambda v: v["status"] != "queued" and v["status"] != "in_progress",
                      "to finish")["status"] == "completed"
        assert http.get(f"/v1/videos/{video_id}/content").headers["content-type"] == "video/mp4"

    # SIGKILL the worker holding a job mid-run: its lease lapses and the other worker finishes it, to one output
    killed = http.post("/v1/videos", json={"prompt": "survives its worker", "webhook_url": receiver.url("/killed"),
                                           **LONG}).json()["id"]
    _until(http, killed, lambda v: v["progress"] > 0, "denoising to start")
    holder_pid = int(_job(server, killed).lease_owner.split(":")[1])  # owner names are host:pid:nonce/thread
    [holder] = [w for w in workers if w.proc.pid == holder_pid]
    assert holder.signal(signal.SIGKILL) == -signal.SIGKILL
    done = _until(http, killed, lambda v: v["status"] == "completed", "to be finished by the other worker")
    assert done["attempts"] == 2
    attempts = server.root / "data" / "files" / "videos" / killed / "attempts"
    assert [p.name for p in attempts.iterdir()] == [str(_job(server, killed).output_token)]
    assert http.get(f"/v1/videos/{killed}/content").status_code == 200

    # webhooks go out from the API process alone: one delivery per job, each on its first attempt
    for path, video_ids in (("/quick", quick), ("/killed", [killed])):
        for video_id in video_ids:
            [row] = wait_until(lambda: [d for d in _deliveries(server, video_id) if d.status == "delivered"],
                               message=f"the webhook of {video_id}")
            assert row.attempts == 1
        assert sorted(verified(call)["data"]["id"] for call in receiver.to(path)) == sorted(video_ids)


@pytest.mark.slow
def test_sigterm_hands_a_running_job_back_or_finishes_it_within_the_grace_period(layout):
    server, start_worker = layout
    http = server.http()
    # the server's settings, --shutdown-grace-seconds 0, but a lease no stall of a loaded machine can lapse
    first = start_worker("worker-a", "--lease-seconds", "60")
    video_id = http.post("/v1/videos", json={"prompt": "handed back", **LONG}).json()["id"]
    _until(http, video_id, lambda v: v["progress"] > 0, "denoising to start")
    assert first.signal(signal.SIGTERM) == 0
    job = _job(server, video_id)
    # given back without spending an attempt, for the next worker to take
    assert (job.status, job.attempts, job.progress, job.lease_owner) == (JobStatus.QUEUED, 0, 0, None)

    second = start_worker("worker-b", "--lease-seconds", "60", "--shutdown-grace-seconds", "600")
    _until(http, video_id, lambda v: v["progress"] > 0, "the second worker to run it")
    assert second.signal(signal.SIGTERM) == 0  # only once the job is done: the grace period is long enough
    done = _video(http, video_id)
    assert (done["status"], done["attempts"]) == ("completed", 1)
