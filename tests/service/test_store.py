"""The job store: durable records, atomic claims, leases, fencing, retries and retention."""

from __future__ import annotations

import threading

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.operations import Operations
from alembic.runtime.migration import MigrationContext
from sqlalchemy import event, inspect, text

from reelgen.cli import main
from reelgen.service.jobs import JobConflict, JobStatus, JobStore, schema
from tests.service.helpers import new_job


@pytest.fixture
def store(database_url, clock) -> JobStore:
    """The store on SQLite and on a real PostgreSQL: every test here runs on both."""
    store = JobStore(database_url, lease_seconds=10, max_attempts=2, retention_seconds=100, clock=clock)
    store.create_schema()
    yield store
    store.close()


def test_added_job_is_queued_and_durable(store, tmp_path):
    job = store.add(new_job())
    assert job.id.startswith("video_") and job.status == JobStatus.QUEUED
    assert (job.progress, job.attempts, job.lease_token) == (0, 0, 0)
    reopened = JobStore(store.engine.url.render_as_string(hide_password=False))
    assert reopened.get(job.id).prompt == "a red circle"
    reopened.close()


def test_list_pages_by_creation_time_both_ways(store, clock):
    ids = []
    for _ in range(5):
        ids.append(store.add(new_job()).id)
        clock.now += 1
    page, more = store.list(limit=2, order="asc")
    assert [j.id for j in page] == ids[:2] and more
    page, more = store.list(after=ids[1], limit=2, order="asc")
    assert [j.id for j in page] == ids[2:4] and more
    page, more = store.list(after=ids[3], limit=2, order="asc")
    assert [j.id for j in page] == ids[4:] and not more
    page, more = store.list(after=ids[2], limit=10, order="desc")
    assert [j.id for j in page] == [ids[1], ids[0]] and not more
    with pytest.raises(KeyError):
        store.list(after="video_missing")


def test_list_breaks_ties_in_creation_time_by_id(store):
    ids = sorted(store.add(new_job()).id for _ in range(4))  # the clock stands still: all created at once
    first, _ = store.list(limit=2, order="asc")
    rest, _ = store.list(after=first[-1].id, limit=10, order="asc")
    assert [j.id for j in first + rest] == ids


def test_claim_takes_the_oldest_job_and_starts_a_lease(store, clock):
    old = store.add(new_job())
    clock.now += 1
    store.add(new_job())
    job = store.claim("w1")
    assert job.id == old.id and job.status == JobStatus.IN_PROGRESS
    assert (job.lease_owner, job.lease_token, job.attempts) == ("w1", 1, 1)
    assert job.lease_expires_at == clock.now + store.lease_seconds


def test_a_slow_claim_still_hands_out_a_whole_lease(store, clock):
    job = store.add(new_job())

    def slow_search(_connection, _cursor, statement, *_):
        if "ORDER BY jobs.created_at" in statement:  # the claim's search for candidates takes 5 s
            clock.now += 5

    event.listen(store.engine, "before_cursor_execute", slow_search)
    claim = store.claim("w1")
    assert claim.id == job.id and claim.lease_expires_at == clock.now + store.lease_seconds


def test_a_worker_claims_only_jobs_of_the_models_it_serves(store):
    store.add(new_job(model="other"))
    wanted = store.add(new_job(model="fake"))
    assert store.claim("w", models=["fake"]).id == wanted.id
    assert store.claim("w", models=["fake"]) is None


def test_concurrent_claims_hand_out_every_job_exactly_once(store):
    ids = {store.add(new_job()).id for _ in range(30)}
    claimed: list[str] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while (job := store.claim(name)) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(ids)


def test_a_second_store_on_the_same_database_cannot_claim_a_claimed_job(store):
    store.add(new_job())
    other = JobStore(store.engine.url.render_as_string(hide_password=False))
    assert store.claim("w1") is not None
    assert other.claim("w2") is None
    other.close()


def test_heartbeat_extends_the_lease_and_records_progress(store, clock):
    job = store.add(new_job())
    claim = store.claim("w1")
    clock.now += 5
    assert store.heartbeat(job.id, claim.lease_token, progress=40)
    fresh = store.get(job.id)
    assert fresh.progress == 40 and fresh.lease_expires_at == clock.now + store.lease_seconds


def test_an_expired_lease_is_retried_and_the_stale_worker_is_fenced_off(store, clock):
    job = store.add(new_job())
    stale = store.claim("w1")
    clock.now += store.lease_seconds + 1
    assert store.recover_expired_leases() == (1, 0)
    assert store.get(job.id).status == JobStatus.QUEUED
    retry = store.claim("w2")
    assert (retry.lease_token, retry.attempts) == (2, 2)
    # the first worker wakes up: every write it tries matches nothing
    assert not store.heartbeat(job.id, stale.lease_token, progress=99)
    assert not store.complete(job.id, stale.lease_token, {})
    assert not store.fail(job.id, stale.lease_token, "x", "y", {})
    assert not store.release(job.id, stale.lease_token)
    assert store.complete(job.id, retry.lease_token, {"denoise": 1.0})
    done = store.get(job.id)
    assert (done.status, done.output_token, done.progress) == (JobStatus.COMPLETED, 2, 100)


def test_a_job_out_of_attempts_fails_with_the_reason(store, clock):
    job = store.add(new_job())
    for _ in range(store.max_attempts):
        assert store.claim("w") is not None
        clock.now += store.lease_seconds + 1
        store.recover_expired_leases()
    failed = store.get(job.id)
    assert failed.status == JobStatus.FAILED and failed.error_code == "lease_expired"
    assert "stopped responding 2 time(s)" in failed.error_message
    assert failed.expires_at == failed.completed_at + store.retention_seconds


def test_a_live_lease_is_not_recovered(store, clock):
    store.add(new_job())
    store.claim("w1")
    clock.now += store.lease_seconds - 1
    assert store.recover_expired_leases() == (0, 0)


def test_release_requeues_without_spending_an_attempt(store):
    job = store.add(new_job())
    claim = store.claim("w1")
    assert store.release(job.id, claim.lease_token)
    again = store.get(job.id)
    assert (again.status, again.attempts, again.lease_owner) == (JobStatus.QUEUED, 0, None)


def test_cancel_stops_queued_and_running_jobs_but_not_finished_ones(store):
    queued = store.add(new_job())
    running = store.add(new_job())
    done = store.add(new_job())
    assert store.cancel(queued.id).status == JobStatus.CANCELLED
    claim = store.claim("w")
    assert claim.id == running.id
    assert store.cancel(running.id).status == JobStatus.CANCELLED
    assert not store.heartbeat(running.id, claim.lease_token)  # the worker learns at its next step
    assert store.cancel(running.id).status == JobStatus.CANCELLED  # idempotent
    finished = store.claim("w")
    store.complete(done.id, finished.lease_token, {})
    with pytest.raises(JobConflict, match="already completed"):
        store.cancel(done.id)
    assert store.cancel("video_missing") is None


def test_delete_removes_the_record_and_fences_its_worker(store):
    job = store.add(new_job())
    claim = store.claim("w")
    assert store.delete(job.id).id == job.id
    assert store.get(job.id) is None and store.delete(job.id) is None
    assert not store.heartbeat(job.id, claim.lease_token)


def test_retention_lists_finished_jobs_whose_time_is_up(store, clock):
    job = store.add(new_job())
    store.complete(job.id, store.claim("w").lease_token, {})
    store.add(new_job())  # queued jobs never expire
    assert store.expired() == []
    clock.now += store.retention_seconds + 1
    assert [j.id for j in store.expired()] == [job.id]
    store.mark_files_deleted(job.id)
    assert store.expired() == [] and store.get(job.id).files_deleted


def test_in_memory_sqlite_is_refused_with_a_reason():
    with pytest.raises(ValueError, match="in-memory"):
        JobStore("sqlite://")


# --- the schema: Alembic migrations on both databases ---


def test_migrations_from_empty_build_exactly_the_models_schema(database_url):
    store = JobStore(database_url)
    assert schema.current(store.engine) is None
    store.create_schema()
    assert schema.current(store.engine) == schema.head()
    with store.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), schema.metadata())
    assert diff == []
    store.close()


def test_the_models_schema_differs_from_an_older_revision(database_url):
    # the comparison above can see a difference: a database one column short of the models shows it
    engine = JobStore(database_url).engine
    schema.upgrade(engine)
    with engine.begin() as connection:
        with Operations(MigrationContext.configure(connection)).batch_alter_table("jobs") as batch:
            batch.drop_column("bytes_served")
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), schema.metadata())
    assert [(change[0], change[3].name) for change in diff] == [("add_column", "bytes_served")]
    engine.dispose()


def test_processes_starting_together_migrate_once(database_url):
    stores = [JobStore(database_url) for _ in range(4)]
    start = threading.Barrier(len(stores))
    errors: list[Exception] = []

    def upgrade(store: JobStore) -> None:
        start.wait()
        try:
            store.create_schema()
        except Exception as e:  # what a lost race looks like: "table jobs already exists"
            errors.append(e)

    threads = [threading.Thread(target=upgrade, args=(store,), daemon=True) for store in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)  # unserialized, PostgreSQL's racing CREATE TABLEs can also wait on each other
    assert not any(t.is_alive() for t in threads) and errors == []
    assert {schema.current(store.engine) for store in stores} == {schema.head()}
    for store in stores:
        store.close()


def test_a_database_made_before_migrations_is_adopted_with_its_jobs(database_url):
    store = JobStore(database_url)
    store.create_schema()
    job = store.add(new_job())
    with store.engine.begin() as connection:  # the baseline is what create_schema made before migrations
        command.downgrade(schema.config(connection), schema.BASELINE)
        connection.execute(text("DROP TABLE alembic_version"))
    store.create_schema()
    assert schema.current(store.engine) == schema.head() and store.get(job.id).prompt == "a red circle"
    store.close()


def test_downgrade_to_empty_and_upgrade_again(database_url):
    store = JobStore(database_url)
    store.create_schema()
    with store.engine.begin() as connection:
        command.downgrade(schema.config(connection), "base")
    assert set(inspect(store.engine).get_table_names()) == {"alembic_version"}
    store.create_schema()
    assert store.claim("w") is None and schema.current(store.engine) == schema.head()
    store.close()


def test_the_db_command_upgrades_and_reports_the_revision(database_url, capsys):
    assert main(["db", "current", "--database-url", database_url]) == 0
    assert "at revision none (empty)" in capsys.readouterr().out
    assert main(["db", "upgrade", "--database-url", database_url]) == 0
    assert f"at revision {schema.head()}, this version's head is {schema.head()}" in capsys.readouterr().out


def test_the_db_command_names_an_unreachable_database(capsys):
    assert main(["db", "current", "--database-url", "postgresql+psycopg://reelgen@127.0.0.1:1/reelgen"]) == 2
    assert "reelgen db: error: cannot reach the database postgresql+psycopg://reelgen@127.0.0.1:1/reelgen" in \
        capsys.readouterr().err
