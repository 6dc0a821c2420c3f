"""The issue's scale test: two `reelgen serve` processes, each with a worker, on one real PostgreSQL and one
object store. Jobs run exactly once, a SIGKILLed worker's job is finished by the other, and a PostgreSQL
restart mid-run loses no accepted job.
"""

from __future__ import annotations

import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from reelgen.service.jobs import JobStore
from tests.service.helpers import wait_until
from tests.service.live import Server

pytestmark = pytest.mark.slow

FAST = {"num_inference_steps": 2}
LONG = {"num_inference_steps": 200}  # seconds on the slow model: time to kill its worker mid-job


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, postgres, slow_model_dir):
    """Two servers sharing a fresh database and a files folder; each keeps its own log."""
    database_url = postgres.create_database()
    files = tmp_path_factory.mktemp("shared-files")
    # A 15 s lease, not live.py's 3 s: this test is about two healthy services running each job exactly once.
    # In a full CI run on 2 shared cores a process can miss heartbeats for 2 s (a garbage collection during its
    # first model load took 1.1 s), and a lapsed lease re-runs the job: lease expiry working as designed, which
    # test_e2e's SIGKILL test covers.
    servers = [Server(tmp_path_factory.mktemp(f"service-{name}"), slow_model_dir, ("--lease-seconds", "15"))
               for name in "ab"]
    with pytest.MonkeyPatch.context() as env:
        env.setenv("REELGEN_DATABASE_URL", database_url)  # Server passes the environment on
        env.setenv("REELGEN_STORAGE_URL", str(files))
        # both start at once: both migrate the empty database, one of them under the other's lock
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(Server.start, servers))
        store = JobStore(database_url)
        yield servers, store, files
        store.close()
        for server in servers:
            server.stop()


def _request(server: Server, method: str, path: str, seen_503: list | None = None, **kwargs) -> httpx.Response:
    """One call, repeated while the service is unavailable (503, or its database restarting) for up to 60 s."""
    deadline = time.monotonic() + 60
    with server.http() as http:
        while True:
            response = http.request(method, path, **kwargs)
            if response.status_code != 503:
                return response
            if seen_503 is not None:
                seen_503.append(response.json()["error"]["code"])
            assert time.monotonic() < deadline, f"{method} {path}: still 503 after 60s"
            time.sleep(0.1)


def _create(server: Server, body: dict, seen_503: list | None = None) -> str:
    response = _request(server, "POST", "/v1/videos", seen_503, json=body)
    assert response.status_code == 200, response.text
    return response.json()["id"]


def _all_completed(server: Server, ids: list[str], timeout: float = 240) -> None:
    def done() -> bool:
        statuses = {_request(server, "GET", f"/v1/videos/{i}").json()["status"] for i in ids}
        assert statuses <= {"queued", "in_progress", "completed"}, statuses
        return statuses == {"completed"}

    wait_until(done, timeout=timeout, interval=0.2, message=f"{len(ids)} videos to complete")


def _runs(servers: list[Server], video_id: str) -> list[int]:
    """Which servers logged running the video, once per attempt."""
    return [i for i, s in enumerate(servers) for line in s.log.read_text().splitlines() if f"runs {video_id}" in line]


def test_fifty_concurrent_jobs_complete_exactly_once_across_two_services(cluster):
    servers, store, files = cluster
    started = time.monotonic()
    with ThreadPoolExecutor(10) as pool:  # half of the creates go to each service
        ids = list(pool.map(lambda i: _create(servers[i % 2], {"prompt": f"a red circle {i}", "seed": i, **FAST}),
                            range(50)))
    _all_completed(servers[0], ids)
    elapsed = time.monotonic() - started
    assert len(set(ids)) == 50
    for video_id in ids:
        job = store.get(video_id)
        # one claim each, whose files are the result; nothing written by any other attempt
        assert (job.attempts, job.lease_token, job.output_token) == (1, 1, 1), video_id
        assert [p.name for p in (files / "videos" / video_id / "attempts").iterdir()] == ["1"]
        assert len(_runs(servers, video_id)) == 1
    per_server = [sum(_runs(servers, i) == [n] for i in ids) for n in range(2)]
    assert min(per_server) > 0, per_server  # both workers took jobs from the shared queue
    # either service serves the files the other's worker stored
    for server in servers:
        assert _request(server, "GET", f"/v1/videos/{ids[0]}/content").content[:12].find(b"ftyp") == 4
    print(f"50 jobs on two services: {elapsed:.1f}s, per worker {per_server}")


def test_a_worker_killed_mid_job_has_its_job_finished_by_the_other(cluster):
    servers, store, files = cluster
    video_id = _create(servers[0], {"prompt": "a long one", **LONG})
    runner = wait_until(lambda: _runs(servers, video_id), timeout=60, message="a worker to take the job")[0]
    wait_until(lambda: store.get(video_id).progress > 0, timeout=60, message="denoising to start")
    killed, survivor = servers[runner], servers[1 - runner]
    assert killed.signal(signal.SIGKILL) == -signal.SIGKILL
    try:
        _all_completed(survivor, [video_id])
        job = store.get(video_id)
        assert (job.attempts, job.output_token) == (2, 2)
        assert _runs(servers, video_id) == [runner, 1 - runner]
        # the finishing attempt removed what the killed one had left
        assert [p.name for p in (files / "videos" / video_id / "attempts").iterdir()] == ["2"]
    finally:
        killed.start()  # the next test needs both


def test_postgresql_restarted_mid_run_loses_no_accepted_job(cluster, postgres):
    servers, store, _ = cluster
    seen_503: list[str] = []
    ids: list[str] = []
    restarted = threading.Event()

    def submit(server: Server) -> None:
        # creates one after another until the database has been restarted, and a few more after that
        n = 0
        while not restarted.is_set() or n < 15:
            ids.append(_create(server, {"prompt": f"a blue square {n}", **FAST}, seen_503))
            n += 1

    submitters = [threading.Thread(target=submit, args=(server,)) for server in servers]
    for t in submitters:
        t.start()
    try:
        wait_until(lambda: sum(store.get(i).status == "completed" for i in list(ids)) >= 3, timeout=120,
                   interval=0.1, message="some jobs to complete before the restart")
        postgres.stop()
        try:
            # the services stay up and say so: a create meanwhile gets 503 database_unavailable, and is retried
            wait_until(lambda: seen_503, timeout=60, message="a create to meet the outage")
        finally:
            postgres.start()
    finally:
        restarted.set()
        for t in submitters:
            t.join(timeout=180)
    assert not any(t.is_alive() for t in submitters) and len(ids) >= 30
    assert set(seen_503) == {"database_unavailable"}
    assert all(server.proc.poll() is None for server in servers)
    _all_completed(servers[1], ids)
    attempts = [store.get(i).attempts for i in ids]
    assert max(attempts) <= 2
    print(f"{len(ids)} jobs accepted around a PostgreSQL restart, all completed; {len(seen_503)} creates got 503; "
          f"{attempts.count(2)} job(s) needed a second attempt")
