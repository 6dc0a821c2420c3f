"""The tenants' tables: API keys, their usage counters, and Idempotency-Key records.

On the jobs' declarative Base, so the job store's migrations (0002) cover them. Secrets are never stored:
only their SHA-256, which is enough because they are random (no password hashing needed).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from reelgen.service.jobs.models import Base


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # "key_...": the owner of its videos
    name: Mapped[str] = mapped_column(String(128), default="")
    secret_hash: Mapped[str] = mapped_column(String(64))  # hex SHA-256 of the secret
    hint: Mapped[str] = mapped_column(String(16), default="")  # the secret's first characters, to recognize it
    configured: Mapped[bool] = mapped_column(default=False)  # from REELGEN_API_KEYS, not `reelgen keys create`
    created_at: Mapped[float]
    revoked_at: Mapped[float | None]
    last_used_at: Mapped[float | None]  # last video created (the update also serializes its admissions)
    # per-key limits; None takes the service's default (settings), 0 is no limit
    requests_per_minute: Mapped[int | None]
    max_concurrent_jobs: Mapped[int | None]
    daily_compute_seconds: Mapped[float | None]
    webhook_url: Mapped[str | None] = mapped_column(Text)  # events of this key's videos, unless a request names one

    __table_args__ = (UniqueConstraint("secret_hash", name="uq_api_keys_secret_hash"),)  # the lookup by secret


class KeyCounter(Base):
    """A fixed-window counter per key: requests per minute, compute seconds per UTC day."""

    __tablename__ = "api_key_counters"

    key_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # "requests" or "compute"
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)  # unix seconds (past 2038 too)
    value: Mapped[float] = mapped_column(default=0.0)


class IdempotencyRecord(Base):
    """One Idempotency-Key of one caller: claimed by a request in flight, then holding its response."""

    __tablename__ = "idempotency_keys"

    owner: Mapped[str] = mapped_column(String(64), primary_key=True)  # a key id; "" while auth is off
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))  # SHA-256 of the parsed request
    created_at: Mapped[float]
    video_id: Mapped[str | None] = mapped_column(String(64))
    response: Mapped[str | None] = mapped_column(Text)  # the JSON answered first; None while in flight

    __table_args__ = (Index("ix_idempotency_keys_created", "created_at"),)  # expiry sweep
