"""PostgreSQL going away and coming back: a worker's write waits it out, the API answers 503 meanwhile.

Each test stops the session's real server and starts it again before it ends.
"""

from __future__ import annotations

import logging
import threading

import pytest
from fastapi.testclient import TestClient

from reelgen.service.app import create_app
from reelgen.service.jobs import JobStatus, JobStore
from tests.service.helpers import FakeGenerator, new_job, wait_until

pytestmark = pytest.mark.slow


@pytest.fixture
def pg_url(postgres):
    url = postgres.create_database()
    yield url
    if not (postgres.data / "postmaster.pid").exists():  # a failed test must not leave the server down
        postgres.start()


def test_a_workers_completion_waits_out_a_database_restart(postgres, pg_url, caplog):
    store = JobStore(pg_url, lease_seconds=60)
    store.create_schema()
    job = store.add(new_job())
    claim = store.claim("w1")
    postgres.stop()
    outcome: list[bool] = []
    with caplog.at_level(logging.WARNING, logger="reelgen.service.jobs.store"):
        writer = threading.Thread(target=lambda: outcome.append(store.complete(job.id, claim.lease_token, {})))
        writer.start()
        wait_until(lambda: "unreachable; retrying" in caplog.text, timeout=30, message="the write to be retried")
        postgres.start()
        writer.join(timeout=60)
    assert outcome == [True]
    done = store.get(job.id)
    assert (done.status, done.output_token) == (JobStatus.COMPLETED, claim.lease_token)
    store.close()


def test_a_retried_write_whose_first_commit_landed_still_reports_success(pg_url, monkeypatch):
    # the COMMIT goes through but its answer is lost: the retry matches no in-progress row, and must see its
    # own write instead of reporting a lost lease (which would delete the finished video's files)
    from sqlalchemy.exc import OperationalError
    from sqlalchemy.orm import SessionTransaction

    store = JobStore(pg_url, lease_seconds=60)
    store.create_schema()
    job = store.add(new_job())
    claim = store.claim("w1")
    commit, lost = SessionTransaction.commit, []

    def commit_then_lose_the_answer(transaction, *args, **kwargs):
        commit(transaction, *args, **kwargs)
        if not lost:
            lost.append(True)
            raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))

    monkeypatch.setattr(SessionTransaction, "commit", commit_then_lose_the_answer)
    assert store.complete(job.id, claim.lease_token, {})
    assert lost and store.get(job.id).status == JobStatus.COMPLETED
    monkeypatch.undo()
    # a different outcome with the same token is not mistaken for this one
    other = store.add(new_job())
    other_claim = store.claim("w1")
    store.cancel(other.id)
    assert not store.complete(other.id, other_claim.lease_token, {})
    store.close()


def test_the_api_answers_503_while_the_database_is_down_and_recovers(postgres, pg_url, make_settings):
    settings = make_settings(database_url=pg_url, api_keys=[])
    with TestClient(create_app(settings, [FakeGenerator()])) as client:
        created = client.post("/v1/videos", json={"prompt": "a red circle", "model": "fake"})
        assert created.status_code == 200, created.text
        postgres.stop()
        down = client.get(f"/v1/videos/{created.json()['id']}")
        assert down.status_code == 503 and down.headers["retry-after"] == "1"
        assert down.json()["error"] == {"message": "The job store is unavailable; retry shortly.",
                                        "type": "server_error", "param": None, "code": "database_unavailable"}
        assert client.post("/v1/videos", json={"prompt": "again", "model": "fake"}).status_code == 503
        postgres.start()
        video = wait_until(lambda: (r := client.get(f"/v1/videos/{created.json()['id']}")).status_code == 200
                           and r.json()["status"] == "completed" and r.json(), timeout=60,
                           message="the service to reconnect and the worker to finish the video")
        assert video["progress"] == 100
