"""The job store: durable records, atomic claims, leases with heartbeats and fencing tokens.

Every write a worker makes is fenced: it names the lease token it was given, and
matches no row once the job was re-claimed, cancelled or deleted. A stale worker
therefore learns it lost the job at its next heartbeat and can never complete it.

Runs on SQLite (one machine) and PostgreSQL (many; `postgresql+psycopg://...`), whose schema is kept by the
migrations in schema.py. Claims on PostgreSQL lock the row they take (`FOR UPDATE SKIP LOCKED`), so workers
in any number of processes never wait on, nor take, each other's jobs.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Literal

from sqlalchemy import Engine, Select, create_engine, delete, event, func, or_, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from reelgen.service.jobs import schema
from reelgen.service.jobs.models import Job
from reelgen.service.jobs.states import ACTIVE, JobStatus

log = logging.getLogger(__name__)

# How many queued jobs one claim considers where rows cannot be locked (SQLite): enough that workers racing
# for the oldest job each move on to another instead of coming back empty-handed.
_CLAIM_CANDIDATES = 8

# Jobs equal in these columns can share one batched denoising pass (the same timesteps and latent shape); each
# keeps its own prompt, negative prompt, seed, guidance scale, and its own fps and format at rendering.
BATCH_KEY = ("model", "size", "frames", "steps", "sampler")


class JobConflict(Exception):
    """An action the job's current state does not allow (cancel a completed job, say)."""

    def __init__(self, job: Job, message: str):
        super().__init__(message)
        self.job = job


def new_job_id() -> str:
    return f"video_{uuid.uuid4().hex}"


class JobStore:
    def __init__(self, url: str, *, lease_seconds: float = 30.0, max_attempts: int = 3,
                 retention_seconds: float = 86400.0, clock: Callable[[], float] = time.time):
        self.engine = _make_engine(url)
        self._session = sessionmaker(self.engine, expire_on_commit=False)
        self.lease_seconds = lease_seconds
        self.max_attempts = max_attempts
        self.retention_seconds = retention_seconds
        self.clock = clock  # injectable, so lease expiry is tested without sleeping
        # A worker's writes outlast a database restart by retrying this long; longer is pointless, as by then
        # its lease has lapsed and the job is another attempt's.
        self.retry_seconds = lease_seconds

    def create_schema(self) -> None:
        """Create or upgrade the tables to the newest schema (Alembic migrations; safe from several processes)."""
        schema.upgrade(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # --- the API's side ---

    def add(self, job: Job, within: Callable[[Session, Job], None] | None = None) -> Job:
        """Record a new queued job; once this returns, the job is durable.

        `within` runs in the same transaction once the row is written (quota checks, idempotency records):
        what it writes commits with the job, and if it raises, the job is never added."""
        job.id = job.id or new_job_id()
        job.created_at = self.clock()
        job.status = JobStatus.QUEUED
        with self._session.begin() as session:
            session.add(job)
            if within is not None:
                session.flush()
                within(session, job)
        return self.get(job.id)

    def get(self, job_id: str) -> Job | None:
        with self._session() as session:
            return session.get(Job, job_id)

    def list(self, *, owner: str | None = None, after: str | None = None, limit: int = 20,
             order: Literal["asc", "desc"] = "desc") -> tuple[list[Job], bool]:
        """A page of `owner`'s jobs (None: those made while auth was off) by creation time, and whether more
        follow. KeyError if `after` names no job of `owner`."""
        query = select(Job).where(Job.owner == owner)  # == None is IS NULL
        with self._session() as session:
            if after is not None:
                cursor = session.get(Job, after)
                if cursor is None or cursor.owner != owner:
                    raise KeyError(after)
                # (created_at, id) is unique, so a page boundary never skips or repeats a job
                if order == "asc":
                    query = query.where(or_(Job.created_at > cursor.created_at,
                                            (Job.created_at == cursor.created_at) & (Job.id > cursor.id)))
                else:
                    query = query.where(or_(Job.created_at < cursor.created_at,
                                            (Job.created_at == cursor.created_at) & (Job.id < cursor.id)))
            keys = (Job.created_at, Job.id) if order == "asc" else (Job.created_at.desc(), Job.id.desc())
            jobs = list(session.scalars(query.order_by(*keys).limit(limit + 1)))
        return jobs[:limit], len(jobs) > limit

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued or running job (its worker stops at its next step); None if there is no such job."""
        now = self.clock()
        with self._session.begin() as session:
            changed = session.execute(
                update(Job).where(Job.id == job_id, Job.status.in_(ACTIVE))
                .values(status=JobStatus.CANCELLED, **self._finished(now)),
            ).rowcount
            job = session.get(Job, job_id)
        if job is not None and not changed and job.status != JobStatus.CANCELLED:
            raise JobConflict(job, f"video {job_id} is already {job.status} and cannot be cancelled")
        return job

    def delete(self, job_id: str) -> Job | None:
        """Remove the record (a running worker loses its lease); returns what was deleted, None if nothing."""
        with self._session.begin() as session:
            job = session.get(Job, job_id)
            if job is not None:
                session.execute(delete(Job).where(Job.id == job_id))
        return job

    # --- the workers' side ---

    def claim(self, worker: str, models: Collection[str] | None = None) -> Job | None:
        """Lease the oldest queued job (of one of `models`, if given) to `worker`, or None.

        Atomic across threads and processes: two workers never hold the same job.
        """
        query = select(Job.id).where(Job.status == JobStatus.QUEUED)
        if models is not None:
            query = query.where(Job.model.in_(models))
        claimed = self._claim(worker, query, 1)
        return claimed[0] if claimed else None

    def claim_compatible(self, worker: str, job: Job, limit: int) -> list[Job]:
        """Lease up to `limit` more queued jobs that can share one batched denoising pass with `job` (same
        BATCH_KEY columns, no input image), oldest first; atomic like `claim`."""
        query = select(Job.id).where(Job.status == JobStatus.QUEUED, Job.has_image.is_(False),
                                     *(getattr(Job, column) == getattr(job, column) for column in BATCH_KEY))
        return self._claim(worker, query, limit) if limit > 0 and not job.has_image else []

    def _claim(self, worker: str, query: Select, limit: int) -> list[Job]:
        """Lease up to `limit` of the queued jobs `query` selects (ids), oldest first."""
        # PostgreSQL locks the rows it selects and SKIP LOCKED passes over rows other claims hold, so the first
        # candidates are already ours alone. SQLite ignores the clause and serializes writers instead, and a
        # candidate can be gone by the UPDATE: the status check there is what makes a claim exclusive.
        postgres = self.engine.dialect.name == "postgresql"
        with self._session.begin() as session:
            candidates = session.scalars(
                query.order_by(Job.created_at).limit(limit if postgres else limit + _CLAIM_CANDIDATES - 1)
                .with_for_update(skip_locked=True),
            ).all()
            # read after the candidates are found: a claim that was slow to get there (a busy database, a stalled
            # process) still hands out a whole lease, not one partly spent before the job was taken
            now = self.clock()
            won = []
            for job_id in candidates:
                if len(won) == limit:
                    break
                if session.execute(
                    update(Job).where(Job.id == job_id, Job.status == JobStatus.QUEUED)
                    .values(status=JobStatus.IN_PROGRESS, lease_owner=worker,
                            lease_expires_at=now + self.lease_seconds, lease_token=Job.lease_token + 1,
                            attempts=Job.attempts + 1, started_at=func.coalesce(Job.started_at, now), progress=0),
                ).rowcount == 1:
                    won.append(job_id)
            return [session.get(Job, job_id) for job_id in won]

    def heartbeat(self, job_id: str, token: int, progress: int | None = None) -> bool:
        """Extend the lease (and record progress); False once the job is no longer this worker's to run."""
        values = {"lease_expires_at": self.clock() + self.lease_seconds}
        if progress is not None:
            values["progress"] = progress
        return self._fenced(job_id, token, **values)

    def complete(self, job_id: str, token: int, timings: dict[str, float]) -> bool:
        """Mark the job done with the files of this attempt; False if the lease was lost first."""
        return self._fenced(job_id, token, status=JobStatus.COMPLETED, progress=100, output_token=token,
                            timings=timings, **self._finished(self.clock()))

    def fail(self, job_id: str, token: int, code: str, message: str, timings: dict[str, float]) -> bool:
        return self._fenced(job_id, token, status=JobStatus.FAILED, error_code=code, error_message=message,
                            timings=timings, **self._finished(self.clock()))

    def requeue(self, job_id: str, token: int) -> bool:
        """Give a job back to the queue after a failure that may pass (its storage was down): the attempt counts."""
        return self._fenced(job_id, token, status=JobStatus.QUEUED, progress=0, lease_owner=None,
                            lease_expires_at=None)

    def release(self, job_id: str, token: int) -> bool:
        """Give a job back to the queue (graceful shutdown): the attempt does not count against max_attempts."""
        return self._fenced(job_id, token, status=JobStatus.QUEUED, attempts=Job.attempts - 1, progress=0,
                            lease_owner=None, lease_expires_at=None)

    # --- housekeeping ---

    def recover_expired_leases(self) -> tuple[int, int]:
        """Re-queue jobs whose worker stopped heartbeating, or fail those out of attempts -> (requeued, failed)."""
        now = self.clock()
        expired = (Job.status == JobStatus.IN_PROGRESS, Job.lease_expires_at < now)
        message = (f"the worker running this video stopped responding {self.max_attempts} time(s); "
                   "giving up")
        with self._session.begin() as session:
            failed = session.execute(
                update(Job).where(*expired, Job.attempts >= self.max_attempts)
                .values(status=JobStatus.FAILED, error_code="lease_expired", error_message=message,
                        **self._finished(now)),
            ).rowcount
            requeued = session.execute(
                update(Job).where(*expired).values(status=JobStatus.QUEUED, progress=0, lease_owner=None,
                                                   lease_expires_at=None),
            ).rowcount
        return requeued, failed

    def expired(self, limit: int = 100) -> list[Job]:
        """Finished jobs past their retention whose files are still stored."""
        with self._session() as session:
            return list(session.scalars(
                select(Job).where(Job.expires_at < self.clock(), Job.files_deleted.is_(False))
                .order_by(Job.expires_at).limit(limit),
            ))

    def mark_files_deleted(self, job_id: str) -> None:
        with self._session.begin() as session:
            session.execute(update(Job).where(Job.id == job_id).values(files_deleted=True))

    def _fenced(self, job_id: str, token: int, **values) -> bool:
        """One write of the lease holder, retried through a database outage of up to `retry_seconds`."""
        fence = (Job.id == job_id, Job.lease_token == token)

        def write() -> bool:
            with self._session.begin() as session:
                return session.execute(
                    update(Job).where(*fence, Job.status == JobStatus.IN_PROGRESS).values(**values),
                ).rowcount == 1

        def landed() -> bool:
            # The connection can drop after a COMMIT went through but before its answer came back: the retry
            # then matches nothing, yet the write is there. A state change is recognized by its fixed columns.
            if "status" not in values:
                return False
            checked = {name: values[name] for name in ("status", "output_token", "error_code") if name in values}
            with self._session() as session:
                row = session.execute(select(*(getattr(Job, n) for n in checked)).where(*fence)).first()
            return row is not None and tuple(row) == tuple(checked.values())

        deadline = time.monotonic() + self.retry_seconds
        delay, retried = 0.1, False
        while True:
            try:
                return write() or (retried and landed())
            except OperationalError:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("the job store is unreachable; retrying a write for %s in %.1fs", job_id, delay)
                time.sleep(delay)
                delay, retried = min(2 * delay, 2.0), True

    def _finished(self, now: float) -> dict:
        """Columns every terminal state sets: the lease ends and the retention clock starts."""
        return {"completed_at": now, "expires_at": now + self.retention_seconds, "lease_owner": None,
                "lease_expires_at": None}


def _make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(parsed, pool_pre_ping=True)
    if parsed.database in (None, "", ":memory:"):
        raise ValueError("an in-memory SQLite database is private to one connection: give the job store a file")
    Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    # Worker threads share the engine; sqlite3's own timeout makes a writer wait for the lock instead of failing.
    engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 30})
    event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    # WAL lets the API read while a worker writes; NORMAL sync is still durable across a process crash.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()
