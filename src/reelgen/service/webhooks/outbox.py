"""The outbox's database side: subscribe at create, turn finished videos into due events, claim and record.

Why no event is dropped or sent twice across crashes: the row exists before the job does (written first at
create), and the event is derived from the job's terminal state, which is durable and final, by an
idempotent `UPDATE ... WHERE status = 'waiting'`. A crash after the job finished but before the event was
fixed only delays it to the next poll of any process. Claims are fenced like job leases: a claim pushes
`next_attempt_at` past a lease and bumps `claim_token`, so two processes never send the same attempt, and a
process killed mid-send gives the row back when the lease ends. (Delivery itself is at-least-once, as
Standard Webhooks expects: a receiver dedupes on `webhook-id`.)
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone

from sqlalchemy import Engine, delete, exists, select, update
from sqlalchemy.orm import sessionmaker

from reelgen.service.jobs import TERMINAL, Job
from reelgen.service.webhooks.models import DELIVERED, FAILED, PENDING, WAITING, WebhookDelivery
from reelgen.service.webhooks.targets import Subscription

EVENTS = {"completed": "video.completed", "failed": "video.failed", "cancelled": "video.cancelled"}
# a `waiting` row whose video is gone this long (deleted, or its create failed after the row was written)
_ORPHAN_SECONDS = 600.0


class Outbox:
    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time):
        self._session = sessionmaker(engine, expire_on_commit=False)
        self.clock = clock

    def subscribe(self, job_id: str, target: Subscription) -> None:
        """Record that `job_id`'s outcome goes to `target`: call before the job is added."""
        with self._session.begin() as session:
            session.add(WebhookDelivery(id=f"msg_{uuid.uuid4().hex}", job_id=job_id, url=target.url,
                                        source=target.source, created_at=self.clock(), status=WAITING))

    def for_job(self, job_id: str) -> list[WebhookDelivery]:
        with self._session() as session:
            return list(session.scalars(select(WebhookDelivery).where(WebhookDelivery.job_id == job_id)))

    def promote(self, render: Callable[[Job], dict], limit: int = 100) -> int:
        """Fix the event and body of waiting rows whose video finished -> how many this call fixed."""
        now = self.clock()
        with self._session() as session:
            rows = session.execute(
                select(WebhookDelivery.id, Job).join(Job, Job.id == WebhookDelivery.job_id)
                .where(WebhookDelivery.status == WAITING, Job.status.in_(TERMINAL)).limit(limit),
            ).all()
        promoted = 0
        for delivery_id, job in rows:
            event = EVENTS[job.status]
            body = json.dumps({"type": event, "timestamp": _iso(job.completed_at or now), "data": render(job)},
                              separators=(",", ":"))
            with self._session.begin() as session:
                # another process may have fixed it first: then this matches nothing
                promoted += session.execute(
                    update(WebhookDelivery).where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == WAITING)
                    .values(status=PENDING, event=event, payload=body, next_attempt_at=now),
                ).rowcount
        return promoted

    def sweep_orphans(self) -> int:
        """Drop waiting rows whose video no longer exists (deleted before it finished, or never added)."""
        with self._session.begin() as session:
            return session.execute(
                delete(WebhookDelivery).where(
                    WebhookDelivery.status == WAITING,
                    WebhookDelivery.created_at < self.clock() - _ORPHAN_SECONDS,
                    ~exists().where(Job.id == WebhookDelivery.job_id)),
            ).rowcount

    def claim(self, lease_seconds: float) -> WebhookDelivery | None:
        """Take the most overdue pending delivery for one attempt, or None if none is due."""
        now = self.clock()
        with self._session.begin() as session:
            candidates = session.execute(
                select(WebhookDelivery.id, WebhookDelivery.claim_token)
                .where(WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at <= now)
                .order_by(WebhookDelivery.next_attempt_at).limit(8).with_for_update(skip_locked=True),
            ).all()
            for delivery_id, token in candidates:
                won = session.execute(
                    update(WebhookDelivery)
                    .where(WebhookDelivery.id == delivery_id, WebhookDelivery.claim_token == token,
                           WebhookDelivery.status == PENDING)
                    .values(claim_token=token + 1, attempts=WebhookDelivery.attempts + 1, last_attempt_at=now,
                            next_attempt_at=now + lease_seconds),
                ).rowcount
                if won:
                    return session.get(WebhookDelivery, delivery_id)
        return None

    def record(self, delivery: WebhookDelivery, *, ok: bool, status_code: int | None, error: str | None,
               retry_at: float | None) -> bool:
        """The outcome of a claimed attempt; `retry_at` None after a failure means out of attempts.
        False if the claim was lost (its lease ran out and another process took the row)."""
        now = self.clock()
        if ok:
            values = {"status": DELIVERED, "delivered_at": now, "next_attempt_at": None, "last_error": None}
        elif retry_at is None:
            values = {"status": FAILED, "next_attempt_at": None, "last_error": error}
        else:
            values = {"status": PENDING, "next_attempt_at": retry_at, "last_error": error}
        with self._session.begin() as session:
            return session.execute(
                update(WebhookDelivery).where(WebhookDelivery.id == delivery.id,
                                              WebhookDelivery.claim_token == delivery.claim_token)
                .values(last_status_code=status_code, **values),
            ).rowcount == 1


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, tz=timezone.utc).isoformat().replace("+00:00", "Z")
