"""Per-key limits counted in the database, so every process serving one job store enforces them together.

Requests per minute and compute seconds per UTC day are fixed-window counters (a burst can reach twice the
per-minute limit across a window boundary, the usual price of a counter this cheap). Concurrent jobs are
counted from the jobs table itself, under the key's row lock.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from reelgen.service.jobs.models import Job
from reelgen.service.jobs.states import ACTIVE
from reelgen.service.tenants.errors import Refused
from reelgen.service.tenants.models import ApiKey, KeyCounter

MINUTE, DAY = 60, 86400
# When one of a key's videos will end cannot be known: a client over its concurrency limit retries after this.
_CONCURRENCY_RETRY_SECONDS = 5
_INSERTS = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


@dataclass(frozen=True)
class Limits:
    """A key's limits; 0 is no limit."""

    requests_per_minute: int
    max_concurrent_jobs: int
    daily_compute_seconds: float

    @classmethod
    def of(cls, key: ApiKey, settings) -> Limits:
        """The key's own limits where it has them, the service's defaults (settings) elsewhere."""
        names = ("requests_per_minute", "max_concurrent_jobs", "daily_compute_seconds")
        own = {name: getattr(key, name) for name in names}
        return cls(**{name: getattr(settings, name) if own[name] is None else own[name] for name in names})


def count_request(engine: Engine, key: ApiKey, limits: Limits, now: float) -> None:
    """Count one request of `key`; Refused (429) past its requests per minute."""
    if not limits.requests_per_minute:
        return
    window = int(now // MINUTE) * MINUTE
    with Session(engine) as session, session.begin():
        count = _add(session, key.id, "requests", window, 1)
    if count > limits.requests_per_minute:
        retry = _until(window + MINUTE, now)
        raise Refused(429, "rate_limit_exceeded", f"Rate limit reached for requests per minute (RPM): limit "
                      f"{limits.requests_per_minute}. Please try again in {retry}s.", retry)


def admit(session: Session, key: ApiKey, limits: Limits, now: float) -> None:
    """Check a new video of `key` against its concurrency limit and daily quota; Refused (429) if over.

    Runs in the transaction that inserts the video, after the insert: raising undoes it."""
    # Locks the key's row (PostgreSQL) or takes the write lock (SQLite): one key's creates, in any number of
    # processes, pass here one at a time, so two of them cannot both take the last free slot.
    session.execute(update(ApiKey).where(ApiKey.id == key.id).values(last_used_at=now))
    if limits.max_concurrent_jobs:
        active = session.scalar(select(func.count()).select_from(Job)
                                .where(Job.owner == key.id, Job.status.in_(ACTIVE)))
        if active > limits.max_concurrent_jobs:  # the new video is one of them
            raise Refused(429, "rate_limit_exceeded", f"Too many videos queued or in progress for this API key: "
                          f"the limit is {limits.max_concurrent_jobs}. Wait for one to finish, or cancel one.",
                          _CONCURRENCY_RETRY_SECONDS)
    if limits.daily_compute_seconds:
        day = int(now // DAY) * DAY
        used = session.scalar(select(KeyCounter.value).where(KeyCounter.key_id == key.id,
                                                             KeyCounter.kind == "compute",
                                                             KeyCounter.window_start == day)) or 0.0
        if used >= limits.daily_compute_seconds:
            raise Refused(429, "insufficient_quota", f"You exceeded your daily compute quota of "
                          f"{limits.daily_compute_seconds:g} seconds ({used:.0f} used); it renews at 00:00 UTC.",
                          _until(day + DAY, now))


def add_compute(session: Session, job_id: str, seconds: float, now: float) -> None:
    """Charge a job's compute seconds to its key's day (nothing for a video made while auth was off).

    Kept apart from the job, so deleting videos does not give quota back."""
    owner = session.scalar(select(Job.owner).where(Job.id == job_id))
    if owner is not None and seconds > 0:
        _add(session, owner, "compute", int(now // DAY) * DAY, seconds)


def compute_today(engine: Engine, key_id: str, now: float) -> float:
    with Session(engine) as session:
        return session.scalar(select(KeyCounter.value).where(
            KeyCounter.key_id == key_id, KeyCounter.kind == "compute",
            KeyCounter.window_start == int(now // DAY) * DAY)) or 0.0


def sweep_counters(engine: Engine, now: float) -> int:
    """Drop the windows that started over a day ago: all of them have ended."""
    with Session(engine) as session, session.begin():
        return session.execute(delete(KeyCounter).where(KeyCounter.window_start < now - DAY)).rowcount


def _add(session: Session, key_id: str, kind: str, window: int, amount: float) -> float:
    """Add to a counter and return its new value, in one statement: concurrent adds never lose a count."""
    insert = _INSERTS[session.get_bind().dialect.name](KeyCounter)
    statement = insert.values(key_id=key_id, kind=kind, window_start=window, value=amount).on_conflict_do_update(
        index_elements=["key_id", "kind", "window_start"], set_={"value": KeyCounter.value + amount},
    ).returning(KeyCounter.value)
    return session.execute(statement).scalar_one()


def _until(moment: float, now: float) -> int:
    return max(1, math.ceil(moment - now))
