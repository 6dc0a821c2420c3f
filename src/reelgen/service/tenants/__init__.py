"""Tenants: API keys in the job store, each owning its videos, with its own limits, quota and webhook URL;
and Idempotency-Key records. The API applies them (api/deps.py, api/create.py); `reelgen keys` manages keys."""

from reelgen.service.tenants.errors import Refused
from sqlalchemy import Engine

from reelgen.service.tenants.idempotency import Idempotency, expire_records
from reelgen.service.tenants.keys import PREFIX, KeyStore, check_limits, hash_secret, is_loopback
from reelgen.service.tenants.limits import Limits, add_compute, admit, compute_today, count_request, sweep_counters
from reelgen.service.tenants.models import ApiKey, IdempotencyRecord, KeyCounter

__all__ = ["PREFIX", "ApiKey", "Idempotency", "IdempotencyRecord", "KeyCounter", "KeyStore", "Limits", "Refused",
           "add_compute", "admit", "check_limits", "compute_today", "count_request", "hash_secret", "is_loopback", "sweep"]


def sweep(engine: Engine, now: float) -> None:
    """Housekeeping: drop ended counter windows and expired Idempotency-Key records."""
    sweep_counters(engine, now)
    expire_records(engine, now)
