"""The webhook outbox: one row per (video, target), from the create request until the event is delivered or
given up on. On the jobs' declarative Base, so the same schema creation (and migrations) covers it.

A row is written when the video is created (status `waiting`, no event yet) and becomes `pending`, with its
event and exact body fixed, once the job reaches a terminal state. Nothing leaves a terminal state, so a
video has at most one event per target, and the row id is the `webhook-id` every retry repeats.
"""

from __future__ import annotations

from sqlalchemy import Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from reelgen.service.jobs.models import Base

WAITING = "waiting"  # the video is not finished yet
PENDING = "pending"  # due at next_attempt_at (a claimed row is pending with next_attempt_at pushed past its lease)
DELIVERED = "delivered"
FAILED = "failed"  # out of attempts


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)  # "msg_...": the webhook-id header
    job_id: Mapped[str] = mapped_column(String(64))
    url: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(64))  # whose target and secret: "request", "key" or "service"
    created_at: Mapped[float]
    status: Mapped[str] = mapped_column(String(16), default=WAITING)
    event: Mapped[str | None] = mapped_column(String(32))  # video.completed | video.failed | video.cancelled
    payload: Mapped[str | None] = mapped_column(Text)  # the body, fixed once: every attempt signs the same bytes

    attempts: Mapped[int] = mapped_column(default=0)  # claims so far, each one an attempt (a crash counts too)
    claim_token: Mapped[int] = mapped_column(default=0)  # fencing: +1 per claim; results name the claim
    next_attempt_at: Mapped[float | None]
    last_attempt_at: Mapped[float | None]
    last_status_code: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[float | None]

    __table_args__ = (
        UniqueConstraint("job_id", "url", name="uq_webhook_deliveries_job_url"),
        Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),  # the sender's due query
    )
