"""API keys in the job store: created with a secret shown once, found by the secret's hash, revoked at once."""

from __future__ import annotations

import hashlib
import ipaddress
import math
import secrets
import time
import uuid
from collections.abc import Callable, Iterable

from sqlalchemy import Engine, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from reelgen.service.tenants.models import ApiKey
from reelgen.service.webhooks.ssrf import BlockedURL, parse_url

PREFIX = "rg_"  # makes a leaked secret recognizable (secret scanners, logs) as a reelgen key
_HINT_CHARS = len(PREFIX) + 4
CONFIGURED_NAME = "REELGEN_API_KEYS"


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def is_loopback(host: str) -> bool:
    """Whether a listening address is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def check_limits(*, requests_per_minute: int | None = None, max_concurrent_jobs: int | None = None,
                 daily_compute_seconds: float | None = None, webhook_url: str | None = None) -> dict:
    """A new key's own limits and webhook URL, checked -> the columns to store; ValueError says what is wrong."""
    limits = {"requests_per_minute": requests_per_minute, "max_concurrent_jobs": max_concurrent_jobs,
              "daily_compute_seconds": daily_compute_seconds}
    for name, value in limits.items():
        if value is not None and (value < 0 or not math.isfinite(value)):
            raise ValueError(f"--{name.replace('_', '-')} must be 0 (no limit) or more, got {value}")
    if webhook_url is not None:
        try:  # syntax only, as for the service's URL: every delivery checks the addresses it resolves to
            parse_url(webhook_url)
        except BlockedURL as e:
            raise ValueError(f"--webhook-url: {e}") from e
    return {**limits, "webhook_url": webhook_url}


class KeyStore:
    def __init__(self, engine: Engine, clock: Callable[[], float] = time.time):
        self.engine, self.clock = engine, clock
        self._keys_exist = False  # keys are never deleted (only revoked): once seen, auth stays on

    def create(self, name: str = "", **limits) -> tuple[ApiKey, str]:
        """A new key -> (its record, its secret). The secret exists only in this return value."""
        secret = PREFIX + secrets.token_urlsafe(32)
        key = ApiKey(id=f"key_{uuid.uuid4().hex[:24]}", name=name, secret_hash=hash_secret(secret),
                     hint=secret[:_HINT_CHARS], created_at=self.clock(), **limits)
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            session.add(key)
        return key, secret

    def list(self) -> list[ApiKey]:
        with Session(self.engine) as session:
            return list(session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id)))

    def get(self, key_id: str) -> ApiKey | None:
        with Session(self.engine) as session:
            return session.get(ApiKey, key_id)

    def revoke(self, key_id: str) -> ApiKey | None:
        """Revoke a key (its next request is refused); None if there is no such key. Revoking twice is fine."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            session.execute(update(ApiKey).where(ApiKey.id == key_id, ApiKey.revoked_at.is_(None))
                            .values(revoked_at=self.clock()))
            return session.get(ApiKey, key_id)

    def find(self, secret: str) -> ApiKey | None:
        """The key whose secret this is, revoked or not; None for an unknown secret.

        Looked up by hash, so the database never sees a secret, and the lookup's timing can tell an attacker
        at most how a hash of their guess compares to stored hashes, which says nothing about any secret."""
        with Session(self.engine) as session:
            return session.scalars(select(ApiKey).where(ApiKey.secret_hash == hash_secret(secret))).first()

    def auth_required(self) -> bool:
        """Whether any key was ever made: then every request needs one."""
        if not self._keys_exist:
            with Session(self.engine) as session:
                self._keys_exist = session.scalars(select(ApiKey.id).limit(1)).first() is not None
        return self._keys_exist

    def register_configured(self, configured: Iterable[str]) -> None:
        """Make the secrets of REELGEN_API_KEYS keys of the store, and revoke those no longer listed there.

        A configured secret that was revoked stays revoked: listing it again does not bring it back."""
        hashes = {hash_secret(secret) for secret in configured}
        now = self.clock()
        try:
            self._register(hashes, now)
        except IntegrityError:  # another process starting at the same time registered one first: now it is known
            self._register(hashes, now)

    def _register(self, hashes: set[str], now: float) -> None:
        with Session(self.engine) as session, session.begin():
            known = set(session.scalars(select(ApiKey.secret_hash).where(ApiKey.secret_hash.in_(hashes))))
            for digest in hashes - known:
                session.add(ApiKey(id=f"key_{uuid.uuid4().hex[:24]}", name=CONFIGURED_NAME, secret_hash=digest,
                                   configured=True, created_at=now))
            session.execute(update(ApiKey).where(ApiKey.configured.is_(True), ApiKey.revoked_at.is_(None),
                                                 ApiKey.secret_hash.not_in(hashes)).values(revoked_at=now))
