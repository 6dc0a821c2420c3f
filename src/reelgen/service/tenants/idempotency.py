"""Idempotency-Key on create, as Stripe and the IETF draft (draft-ietf-httpapi-idempotency-key-header) define it.

The first request with a key claims it; its response is stored in the transaction that creates the video,
so a video never exists without its record. A retry with the same body gets that response again; the same key
with another body is 422; a retry while the first is still in flight is 409. Keys belong to one API key and
expire after 24 hours.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable

from sqlalchemy import Engine, delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from reelgen.service.tenants.errors import Refused
from reelgen.service.tenants.models import IdempotencyRecord

TTL_SECONDS = 24 * 3600
# A claim without a response this old belongs to a request whose process died: it no longer holds the key.
ABANDONED_SECONDS = 300
_RETRY_IN_FLIGHT_SECONDS = 1


class Idempotency:
    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time):
        self.engine, self.clock = engine, clock

    def claim(self, owner: str, key: str, request_hash: str) -> dict | None:
        """Claim `key` for a new request -> None; or the response of the earlier request that used it.

        Refused 422 if that request had another body, 409 while it is in flight."""
        for _ in range(3):  # a stale record is removed, then the claim is tried again
            now = self.clock()
            try:
                with Session(self.engine) as session, session.begin():
                    session.add(IdempotencyRecord(owner=owner, key=key, request_hash=request_hash, created_at=now))
                return None
            except IntegrityError:
                pass  # the key is taken: see by what
            with Session(self.engine) as session, session.begin():
                record = session.get(IdempotencyRecord, (owner, key))
                if record is None:
                    continue  # expired and swept in between
                if record.created_at < now - TTL_SECONDS or (record.response is None
                                                             and record.created_at < now - ABANDONED_SECONDS):
                    # created_at matches only this record: a claim another request just made stays
                    session.execute(delete(IdempotencyRecord).where(*_this(owner, key),
                                                                    IdempotencyRecord.created_at == record.created_at))
                    continue
                if record.request_hash != request_hash:
                    raise Refused(422, "idempotency_key_reused", f"Idempotency-Key '{key}' was used with another "
                                  "request body; a retry must repeat the body exactly, a new request needs a new key.")
                if record.response is None:
                    break
                return json.loads(record.response)
        raise Refused(409, "idempotency_key_in_use", f"A request with Idempotency-Key '{key}' is still in progress; "
                      "retry once it has finished.", _RETRY_IN_FLIGHT_SECONDS)

    @staticmethod
    def complete(session: Session, owner: str, key: str, video_id: str, response: dict) -> None:
        """Store the response of the claiming request, inside the transaction that creates its video."""
        record = session.get(IdempotencyRecord, (owner, key))
        if record is None:  # taken for abandoned by another request: that one makes the video, not this one
            raise Refused(409, "idempotency_key_in_use", f"Idempotency-Key '{key}' was taken over by another "
                          "request while this one ran.")
        record.video_id, record.response = video_id, json.dumps(response)

    def release(self, owner: str, key: str) -> None:
        """Free a claim whose request failed: a retry may then try again."""
        with Session(self.engine) as session, session.begin():
            session.execute(delete(IdempotencyRecord).where(*_this(owner, key), IdempotencyRecord.response.is_(None)))



def expire_records(engine: Engine, now: float) -> int:
    """Drop the records past their 24 hours (claim treats them as gone already)."""
    with Session(engine) as session, session.begin():
        return session.execute(delete(IdempotencyRecord)
                               .where(IdempotencyRecord.created_at < now - TTL_SECONDS)).rowcount


def _this(owner: str, key: str) -> tuple:
    return IdempotencyRecord.owner == owner, IdempotencyRecord.key == key
